"""mergevq_hf: MergeVQ (CVPR 2025) in the Hugging Face ecosystem."""

from transformers import AutoConfig, AutoModel

from .models.tokenizer import MergeVQConfig, MergeVQEncoderOutput, MergeVQModel, MergeVQModelOutput

__version__ = "0.1.0"

AutoConfig.register(MergeVQConfig.model_type, MergeVQConfig, exist_ok=True)
AutoModel.register(MergeVQConfig, MergeVQModel, exist_ok=True)

__all__ = ["MergeVQConfig", "MergeVQEncoderOutput", "MergeVQModel", "MergeVQModelOutput", "__version__"]
