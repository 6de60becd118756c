from .cache import MergePruningCache, duplicate_mask
from .configuration_mergear import PRESETS, MergeARConfig
from .generation import SampleNoise, generate_codes, sample
from .modeling_mergear import MergeARCausalLMOutput, MergeARForCausalLM, MergeARPreTrainedModel

__all__ = [
    "PRESETS",
    "SampleNoise",
    "MergeARCausalLMOutput",
    "MergeARConfig",
    "MergeARForCausalLM",
    "MergeARPreTrainedModel",
    "MergePruningCache",
    "duplicate_mask",
    "generate_codes",
    "sample",
]
