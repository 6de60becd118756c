"""Training checkpoints: written atomically (crashes, full disks), resumed exactly, without unpickling arbitrary
objects. (Metrics: ``metrics_log.py``; the LR schedule: ``schedule.py``.)

What a checkpoint ``<output_dir>/checkpoints/step-N/`` holds, and how each piece is loaded on resume
(accelerate 1.15 behaviour checked in ``accelerate/checkpointing.py``; ``accelerate.utils.load`` passes
``weights_only=True`` to ``torch.load`` unless told otherwise, and we pass ``load_kwargs={"weights_only": True}``
explicitly where ``Accelerator.load_state`` accepts it):

- ``model.safetensors``, ``model_<i>.safetensors``: every model passed to ``prepare`` (in ``prepare`` order),
  written by ``accelerator.save_state``; loaded by ``accelerator.load_state`` with safetensors (``load_model``).
- ``optimizer.bin``, ``optimizer_<i>.bin``: ``torch.save`` of each prepared optimizer's ``state_dict()`` (tensors,
  numbers, tuples, no classes) by ``accelerator.save_state``; loaded by ``accelerator.load_state`` with
  ``torch.load(weights_only=True)``. (``scheduler*.bin`` / ``scaler.pt`` likewise, when prepared: not in our
  scripts.)
- ``state_<name>.safetensors``: one per object given to :func:`register_for_checkpointing` (``TrainingState``
  counters, EMA shadow weights + ``decay``/``num_updates``, discriminator + LeCam EMA buffers), written by process
  0; nested dicts are flattened with "/", ints/floats/bools become 0-d tensors and their Python types (plus
  strings/None) sit in the safetensors metadata. Loaded with ``safetensors.torch.load_file`` ->
  ``obj.load_state_dict``.
- ``rng_state_<rank>.safetensors``: one per process: Python ``random`` (its 625 ints + ``gauss_next``), NumPy's
  MT19937 (624 keys, pos, cached gaussian), the torch CPU RNG (ByteTensor), CUDA/XPU/MPS RNGs when present, and
  ``accelerator.step``. Loaded with ``safetensors.torch.load_file`` -> ``random.setstate``, ``np.random.set_state``,
  ``torch.set_rng_state``, ...
- ``COMPLETE``: written last by process 0, JSON ``{"step": N, "files": {name: bytes}, "time": ...}``; read with
  ``json`` and every listed size checked before anything else is loaded.

No ``.pkl`` is written: accelerate's own ``random_states_<rank>.pkl`` (a pickle that older accelerate versions
load with full ``torch.load``) is deleted right after ``save_state`` and replaced by ``rng_state_<rank>.safetensors``
(accelerate then logs "Could not load random states" on resume and we restore them ourselves). Objects registered
with accelerate's own ``accelerator.register_for_checkpointing`` would be pickled (``custom_checkpoint_<i>.pkl``,
loaded with ``weights_only=False``): use :func:`register_for_checkpointing` of this module instead.

Writing: everything goes to ``checkpoints/tmp-step-N``; files are fsync'ed, then ``COMPLETE`` is written, then the
folder is renamed atomically to ``step-N``. Any failure removes ``tmp-step-N``; a full disk raises
``OSError(ENOSPC, "no space left on device while writing checkpoint <path> ...")``.

Resuming: ``--resume latest`` walks ``step-N`` newest first and loads the newest *complete* one (``COMPLETE``
present, every listed file present with its size); each skipped one, and each one whose loading still fails
(e.g. a corrupt safetensors header), gives a :class:`CheckpointWarning` and the previous one is tried. An explicit
``--resume <folder>`` that is incomplete or fails to load raises ``ValueError``. After a resume,
``metrics_log.MetricsLogger`` drops the rows of ``metrics.jsonl`` logged after the checkpoint (``step > N``).
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import random
import re
import shutil
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
TMP_PATTERN = re.compile(r"^tmp-step-(\d+)$")
MARKER_NAME = "COMPLETE"
STATE_FILE = "state_{}.safetensors"
RNG_FILE = "rng_state_{}.safetensors"
ACCELERATE_RNG_FILE = "random_states_{}.pkl"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
_SEPARATOR = "/"  # nesting separator of flattened state dicts (state-dict keys use ".")

# per-Accelerator bookkeeping (kept outside the Accelerator object)
_REGISTERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RESUMED_STEP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (incomplete or unreadable) while looking for one to resume from."""


class TrainingState:
    """Counters saved with every checkpoint (register it with :func:`register_for_checkpointing`)."""

    def __init__(self):
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.bad_steps = 0  # optimizer steps skipped for a non-finite loss / gradient norm

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "bad_steps": self.bad_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epoch, self.step_in_epoch = (int(state[k]) for k in ("step", "epoch", "step_in_epoch"))
        self.bad_steps = int(state.get("bad_steps", 0))  # checkpoints written before the counter existed


class ModuleStateSubset:
    """Checkpoint only the named submodules of ``module`` (their parameters and persistent buffers).

    ``ModuleStateSubset(loss_fn, "discriminator", "lecam")`` saves the trainable discriminator (with its BatchNorm
    statistics) and the LeCam EMA buffers of a ``MergeVQLoss``, not its frozen LPIPS network. Every parameter of
    ``module`` outside the named submodules must be frozen (``requires_grad=False``), else ``ValueError``: a
    trainable parameter would silently be left out of the checkpoint."""

    def __init__(self, module: torch.nn.Module, *names: str):
        if not names:
            raise ValueError("ModuleStateSubset needs at least one submodule name")
        for name in names:
            if not isinstance(getattr(module, name, None), torch.nn.Module):
                raise ValueError(f"{type(module).__name__} has no submodule {name!r}")
        kept = {id(p) for name in names for p in getattr(module, name).parameters()}
        trainable = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in kept]
        if trainable:
            raise ValueError(f"trainable parameters outside {names} would not be checkpointed: {trainable[:5]}")
        self.module, self.names = module, names

    def state_dict(self) -> dict:
        return {name: getattr(self.module, name).state_dict() for name in self.names}

    def load_state_dict(self, state: dict) -> None:
        missing = [name for name in self.names if name not in state]
        if missing:
            raise ValueError(f"checkpoint state has no {missing}; it has {sorted(state)}")
        for name in self.names:
            getattr(self.module, name).load_state_dict(state[name])


def register_for_checkpointing(accelerator: Accelerator, **objects) -> None:
    """Save/restore ``objects`` (anything with ``state_dict``/``load_state_dict`` whose state is a nested dict of
    tensors, ints, floats, bools, strings and None) with every :func:`save_checkpoint` / :func:`resume_from`, as
    ``state_<name>.safetensors``. Their state must be identical on every process (process 0 writes it)."""
    registry = _REGISTERED.setdefault(accelerator, {})
    for name, obj in objects.items():
        if not _NAME_PATTERN.match(name):
            raise ValueError(f"checkpoint object name {name!r}; allowed: letters, digits, '_'")
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"{name}={type(obj).__name__} needs state_dict() and load_state_dict()")
        if name in registry:
            raise ValueError(f"a checkpoint object named {name!r} is already registered")
        registry[name] = obj


# ---------------------------------------------------------------------------------------------- state <-> tensors
def _flatten(state: dict, prefix: str, tensors: dict, kinds: dict, seen: set) -> None:
    if not state and prefix:
        kinds[prefix.rstrip(_SEPARATOR)] = ["dict"]
    for key, value in state.items():
        if not isinstance(key, str) or _SEPARATOR in key or not key:
            raise TypeError(f"state key {key!r} under {prefix!r}: keys must be non-empty strings without '/'")
        name = prefix + key
        if isinstance(value, dict):
            _flatten(value, name + _SEPARATOR, tensors, kinds, seen)
        elif isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            if tensor.numel():
                pointer = tensor.untyped_storage().data_ptr()
                if pointer in seen:
                    tensor = tensor.clone()  # shares storage with an earlier entry (tied weights): safetensors refuses
                else:
                    seen.add(pointer)
            tensors[name] = tensor.contiguous()
        elif isinstance(value, bool):
            tensors[name], kinds[name] = torch.tensor(value), ["bool"]
        elif isinstance(value, int):
            tensors[name], kinds[name] = torch.tensor(value, dtype=torch.int64), ["int"]
        elif isinstance(value, float):
            tensors[name], kinds[name] = torch.tensor(value, dtype=torch.float64), ["float"]
        elif isinstance(value, str):
            kinds[name] = ["str", value]
        elif value is None:
            kinds[name] = ["none"]
        else:
            raise TypeError(
                f"state entry {name!r} is a {type(value).__name__}; only tensors and plain values are saved"
            )


def save_state_file(state: dict, path: str | Path) -> None:
    """Write a nested state dict as one safetensors file (Python scalars as 0-d tensors + types in metadata)."""
    tensors, kinds = {}, {}
    _flatten(state, "", tensors, kinds, set())
    save_file(tensors, str(path), metadata={"format": "pt", "mergevq_state_kinds": json.dumps(kinds)})


def load_state_file(path: str | Path) -> dict:
    """Inverse of :func:`save_state_file`: ``safetensors.torch.load_file`` (no pickle) and the metadata."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    kinds = json.loads(metadata.get("mergevq_state_kinds", "{}"))
    values: dict = dict(tensors)
    for name, kind in kinds.items():
        if kind[0] == "bool":
            values[name] = bool(tensors[name].item())
        elif kind[0] == "int":
            values[name] = int(tensors[name].item())
        elif kind[0] == "float":
            values[name] = float(tensors[name].item())
        elif kind[0] == "str":
            values[name] = kind[1]
        elif kind[0] == "none":
            values[name] = None
        elif kind[0] == "dict":
            values[name] = {}
        else:
            raise ValueError(f"{path}: unknown entry kind {kind!r} for {name!r}")
    state: dict = {}
    for name, value in values.items():
        *parents, leaf = name.split(_SEPARATOR)
        node = state
        for parent in parents:
            node = node.setdefault(parent, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            continue
        node[leaf] = value
    return state


# ---------------------------------------------------------------------------------------------- RNG states
def _rng_state(accelerator: Accelerator) -> dict:
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "accelerator_step": int(getattr(accelerator, "step", 0)),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # as accelerate does
        state["cuda"] = {str(i): s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        state["xpu"] = {str(i): s for i, s in enumerate(torch.xpu.get_rng_state_all())}
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(accelerator: Accelerator, state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss_next"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in sorted(state["cuda"].items(), key=lambda kv: int(kv[0])):
            if int(i) < torch.cuda.device_count():
                torch.cuda.set_rng_state(s, int(i))
    if "xpu" in state and hasattr(torch, "xpu") and torch.xpu.is_available():
        for i, s in state["xpu"].items():
            torch.xpu.set_rng_state(s, int(i))
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
    accelerator.step = state["accelerator_step"]


# ---------------------------------------------------------------------------------------------- checking
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """``step-N`` folders under ``output_dir/checkpoints``, oldest first (complete or not: see
    :func:`checkpoint_problem`)."""
    root = Path(output_dir) / "checkpoints"
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def read_manifest(path: str | Path) -> dict:
    """The ``COMPLETE`` manifest of a checkpoint folder (``ValueError`` when missing or unreadable)."""
    marker = Path(path) / MARKER_NAME
    try:
        manifest = json.loads(marker.read_text())
    except FileNotFoundError:
        raise ValueError(f"no {MARKER_NAME} marker (the save never finished)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable {MARKER_NAME} marker ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"malformed {MARKER_NAME} marker")
    return manifest


def checkpoint_problem(path: str | Path, process_index: int | None = None) -> str | None:
    """None when ``path`` is a complete checkpoint (marker present, every listed file there with its size, and
    the RNG file of ``process_index`` when given); else what is wrong, in words."""
    path = Path(path)
    if not path.is_dir():
        return "not a folder"
    try:
        manifest = read_manifest(path)
    except ValueError as e:
        return str(e)
    for name, size in manifest["files"].items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, {size} expected (truncated or overwritten)"
    if process_index is not None and RNG_FILE.format(process_index) not in manifest["files"]:
        return f"no {RNG_FILE.format(process_index)} (saved with fewer processes?)"
    return None


def any_process(accelerator: Accelerator, flag: bool | torch.Tensor) -> bool:
    """True on every process when ``flag`` (a bool, or a 0-d / 1-element tensor on any device) is true on any: one
    all-reduce, none with one process; a tensor flag is read on the host once, after the reduce."""
    if isinstance(flag, torch.Tensor):
        flag = flag.reshape(1).float().to(accelerator.device)
    elif accelerator.num_processes == 1:
        return bool(flag)
    else:
        flag = torch.tensor([float(flag)], device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum")
    return bool(flag.item() > 0)


def _warn(accelerator: Accelerator, message: str) -> None:
    if accelerator.is_main_process:
        warnings.warn(message, CheckpointWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------- saving
def _is_no_space(exc: BaseException, folder: Path) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(seen).lower()
        if "no space left" in text or "storagefull" in text or "os error 28" in text:
            return True
        if "write failed" in text or "failed writing" in text:  # torch.save drops the errno
            try:
                if shutil.disk_usage(folder).free < 64 * 2**20:
                    return True
            except OSError:
                pass
        seen = seen.__cause__ or seen.__context__
    return False


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # file systems without fsync on this
            raise
    finally:
        os.close(fd)


def _write_own_files(accelerator: Accelerator, tmp: Path) -> None:
    """Runs on every process after ``accelerator.save_state(tmp)``: RNG as safetensors instead of accelerate's
    pickle, and (process 0) the registered objects."""
    (tmp / ACCELERATE_RNG_FILE.format(accelerator.process_index)).unlink(missing_ok=True)
    save_state_file(_rng_state(accelerator), tmp / RNG_FILE.format(accelerator.process_index))
    if accelerator.is_main_process:
        for name, obj in _REGISTERED.get(accelerator, {}).items():
            save_state_file(obj.state_dict(), tmp / STATE_FILE.format(name))


def _finalize(tmp: Path, final: Path, step: int) -> None:
    """Process 0: flush every file, write the marker last, rename ``tmp`` to ``final`` atomically."""
    files = {}
    for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
        _fsync(file)
        files[file.relative_to(tmp).as_posix()] = file.stat().st_size
    marker = tmp / MARKER_NAME
    with open(marker, "w") as f:
        json.dump({"step": step, "files": files, "time": round(time.time(), 3)}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync(final.parent)


def _fail_together(accelerator: Accelerator, error: BaseException | None, tmp: Path, final: Path) -> None:
    """If any process failed: remove ``tmp`` and raise on every process (a clear message for a full disk)."""
    if not any_process(accelerator, error is not None):
        return
    no_space = error is not None and _is_no_space(error, tmp.parent)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    if error is None:
        raise RuntimeError(f"writing checkpoint {final} failed on another process; the partial checkpoint was removed")
    if no_space:
        raise OSError(
            errno.ENOSPC,
            f"no space left on device while writing checkpoint {final} (the partial checkpoint {tmp.name} was "
            "removed; free some space or lower --total-limit, then resume)",
        ) from error
    raise error


def save_checkpoint(accelerator: Accelerator, output_dir: str | Path, step: int, total_limit: int | None) -> Path:
    """Write ``output_dir/checkpoints/step-<step>`` (see the module docstring for its contents) through
    ``tmp-step-<step>`` and an atomic rename. With ``total_limit``, only the newest ``total_limit`` complete
    checkpoints are kept (incomplete ``step-*`` folders are removed too)."""
    root = Path(output_dir) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f"tmp-step-{step}"
    if getattr(accelerator, "_custom_objects", None):
        warnings.warn(
            "objects registered with accelerator.register_for_checkpointing are pickled by accelerate and loaded "
            "with weights_only=False; register them with mergevq_hf.training.checkpoint.register_for_checkpointing",
            stacklevel=2,
        )
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.iterdir():  # leftovers of a crashed save
            if TMP_PATTERN.match(stale.name):
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    error = None
    try:
        accelerator.save_state(str(tmp))
        _write_own_files(accelerator, tmp)
    except Exception as e:  # noqa: BLE001 - re-raised by _fail_together on every process
        error = e
    _fail_together(accelerator, error, tmp, final)
    accelerator.wait_for_everyone()
    error = None
    if accelerator.is_main_process:
        try:
            _finalize(tmp, final, step)
        except Exception as e:  # noqa: BLE001
            error = e
    _fail_together(accelerator, error, tmp, final)
    if accelerator.is_main_process and total_limit:  # incomplete ones are useless: they go too
        checkpoints = list_checkpoints(output_dir)
        keep = [p for p in checkpoints if checkpoint_problem(p) is None][-total_limit:]
        for old in checkpoints:
            if old not in keep:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------- loading
def load_checkpoint(accelerator: Accelerator, path: str | Path) -> None:
    """Restore models/optimizers (``accelerator.load_state``), the registered objects and the RNG states from a
    complete checkpoint, without full unpickling."""
    path = Path(path)
    registry = _REGISTERED.get(accelerator, {})
    missing = [name for name in registry if not (path / STATE_FILE.format(name)).is_file()]
    if missing:
        raise ValueError(f"{path} has no state for {missing} (saved by a different configuration?)")
    kwargs = {}
    if "load_kwargs" in inspect.signature(accelerator.load_state).parameters:
        kwargs["load_kwargs"] = {"weights_only": True}
    accelerator.load_state(str(path), **kwargs)
    for name, obj in registry.items():
        obj.load_state_dict(load_state_file(path / STATE_FILE.format(name)))
    _set_rng_state(accelerator, load_state_file(path / RNG_FILE.format(accelerator.process_index)))


def _try_load(accelerator: Accelerator, path: Path) -> Exception | None:
    """Load ``path`` into the training objects; the error instead of raising (every process must agree)."""
    try:
        load_checkpoint(accelerator, path)
    except Exception as error:  # noqa: BLE001  (any failure means: this checkpoint is not usable)
        return error
    return None


def resume_from(accelerator: Accelerator, output_dir: str | Path, resume: str | None) -> Path | None:
    """Load ``resume`` ("latest" or a checkpoint folder); None if there is nothing to resume from.

    "latest": the newest complete checkpoint that loads, skipping (with a :class:`CheckpointWarning`) incomplete
    ones and ones that fail to load; ``RuntimeError`` if checkpoints exist but none is usable. A folder: loaded,
    or ``ValueError`` if it is incomplete or unreadable. The resumed step is remembered for :class:`MetricsLogger`.
    """
    if not resume:
        return None
    rank = accelerator.process_index
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise ValueError(f"--resume {resume!r} is neither 'latest' nor a checkpoint folder")
        problem = checkpoint_problem(path, rank)
        if any_process(accelerator, problem is not None):
            raise ValueError(f"--resume {resume!r} is not a complete checkpoint: {problem or 'see another process'}")
        error = _try_load(accelerator, path)
        if any_process(accelerator, error is not None):
            raise ValueError(f"--resume {resume!r}: the checkpoint could not be loaded ({error!r})") from error
        _RESUMED_STEP[accelerator] = int(read_manifest(path)["step"])
        return path
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        accelerator.print(f"--resume latest: no checkpoint under {output_dir}/checkpoints, starting fresh")
        _RESUMED_STEP[accelerator] = 0
        return None
    reasons = []
    for path in reversed(checkpoints):
        problem = checkpoint_problem(path, rank)
        if any_process(accelerator, problem is not None):
            reasons.append(f"{path.name}: {problem or 'incomplete on another process'}")
            _warn(accelerator, f"--resume latest: skipping {path}: {reasons[-1].split(': ', 1)[1]}")
            continue
        error = _try_load(accelerator, path)
        if any_process(accelerator, error is not None):
            reasons.append(f"{path.name}: failed to load ({error!r})")
            _warn(accelerator, f"--resume latest: could not load {path} ({error!r}); falling back to an older one")
            continue
        _RESUMED_STEP[accelerator] = int(read_manifest(path)["step"])
        return path
    raise RuntimeError(
        f"--resume latest: none of the {len(checkpoints)} checkpoints under {output_dir}/checkpoints is usable: "
        + "; ".join(reasons)
    )


def resumed_step(accelerator: Accelerator) -> int | None:
    """The step :func:`resume_from` resumed at (0 when ``--resume latest`` found nothing); None without resume."""
    return _RESUMED_STEP.get(accelerator)
