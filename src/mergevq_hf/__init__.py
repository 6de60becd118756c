"""mergevq_hf: MergeVQ (CVPR 2025) in the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel

from .models.tokenizer import MergeVQConfig, MergeVQEncoderOutput, MergeVQModel, MergeVQModelOutput

__version__ = "0.1.0"

AutoConfig.register(MergeVQConfig.model_type, MergeVQConfig, exist_ok=True)
AutoModel.register(MergeVQConfig, MergeVQModel, exist_ok=True)
# save_pretrained also writes the model files + auto_map, so a saved folder loads as Hub remote code
# (AutoModel.from_pretrained(dir, trust_remote_code=True)) where mergevq_hf is not installed.
MergeVQConfig.register_for_auto_class()
MergeVQModel.register_for_auto_class("AutoModel")

__all__ = ["MergeVQConfig", "MergeVQEncoderOutput", "MergeVQModel", "MergeVQModelOutput", "__version__"]
