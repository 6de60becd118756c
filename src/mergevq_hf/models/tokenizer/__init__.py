from .configuration_mergevq import PRESETS, MergeVQConfig
from .image_processing_mergevq import MergeVQImageProcessor
from .modeling_mergevq import (
    MergeVQEncoderOutput,
    MergeVQForImageClassification,
    MergeVQModel,
    MergeVQModelOutput,
    MergeVQPreTrainedModel,
)

__all__ = [
    "PRESETS",
    "MergeVQConfig",
    "MergeVQEncoderOutput",
    "MergeVQForImageClassification",
    "MergeVQImageProcessor",
    "MergeVQModel",
    "MergeVQModelOutput",
    "MergeVQPreTrainedModel",
]
