from .configuration_mergevq import PRESETS, MergeVQConfig
from .modeling_mergevq import MergeVQEncoderOutput, MergeVQModel, MergeVQModelOutput, MergeVQPreTrainedModel

__all__ = [
    "PRESETS",
    "MergeVQConfig",
    "MergeVQEncoderOutput",
    "MergeVQModel",
    "MergeVQModelOutput",
    "MergeVQPreTrainedModel",
]
