"""The same pipeline as a ``diffusers.DiffusionPipeline`` (only importable where diffusers is installed), so
``DiffusionPipeline.from_pretrained(folder)`` accepts a folder saved by ``MergeVQPipeline.save_pretrained``:
its ``model_index.json`` names this class through the small ``diffusers_mergevq.py`` file saved beside it."""

from __future__ import annotations

from diffusers import DiffusionPipeline

from .pipeline_mergevq import MergeVQPipeline


class MergeVQDiffusionPipeline(DiffusionPipeline, MergeVQPipeline):
    """``MergeVQPipeline.__call__`` and labels, diffusers' loading, saving and device handling."""

    _optional_components = ["source_recovery"]

    def __init__(self, tokenizer, generator, source_recovery=None):
        DiffusionPipeline.__init__(self)
        MergeVQPipeline.check_components(tokenizer, generator, source_recovery)
        self.register_modules(tokenizer=tokenizer, generator=generator, source_recovery=source_recovery)
        self.progress = True

    __call__ = MergeVQPipeline.__call__
