from .tokenizer import MergeVQConfig, MergeVQModel

__all__ = ["MergeVQConfig", "MergeVQModel"]
