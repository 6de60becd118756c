"""mergevq_hf: MergeVQ (CVPR 2025) in the Hugging Face ecosystem."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
)

from .models.mergear import MergeARConfig, MergeARForCausalLM, MergePruningCache
from .models.random_ar import RandomARConfig, RandomARForCausalLM
from .models.source_recovery import SourceRecoveryConfig, SourceRecoveryModel, SourceRecoveryOutput
from .models.tokenizer import (
    MergeVQConfig,
    MergeVQEncoderOutput,
    MergeVQForImageClassification,
    MergeVQImageProcessor,
    MergeVQModel,
    MergeVQModelOutput,
)
from .pipelines import MergeVQPipeline, MergeVQPipelineOutput

__version__ = "0.1.0"

for _config, _model, _auto in (
    (MergeVQConfig, MergeVQModel, AutoModel),
    (SourceRecoveryConfig, SourceRecoveryModel, AutoModel),
    (MergeARConfig, MergeARForCausalLM, AutoModelForCausalLM),
    (RandomARConfig, RandomARForCausalLM, AutoModelForCausalLM),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    _auto.register(_config, _model, exist_ok=True)
    # save_pretrained also writes the model files + auto_map, so a saved folder loads as Hub remote code
    # (Auto*.from_pretrained(dir, trust_remote_code=True)) where mergevq_hf is not installed.
    _config.register_for_auto_class()
    _model.register_for_auto_class(_auto.__name__)
AutoModelForImageClassification.register(MergeVQConfig, MergeVQForImageClassification, exist_ok=True)
MergeVQForImageClassification.register_for_auto_class("AutoModelForImageClassification")
AutoImageProcessor.register(MergeVQConfig, slow_image_processor_class=MergeVQImageProcessor, exist_ok=True)
MergeVQImageProcessor.register_for_auto_class()

__all__ = [
    "MergeARConfig",
    "MergeARForCausalLM",
    "MergePruningCache",
    "MergeVQConfig",
    "MergeVQEncoderOutput",
    "MergeVQForImageClassification",
    "MergeVQImageProcessor",
    "MergeVQModel",
    "MergeVQModelOutput",
    "MergeVQPipeline",
    "MergeVQPipelineOutput",
    "RandomARConfig",
    "RandomARForCausalLM",
    "SourceRecoveryConfig",
    "SourceRecoveryModel",
    "SourceRecoveryOutput",
    "__version__",
]
