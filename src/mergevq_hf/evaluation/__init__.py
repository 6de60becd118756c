from .reconstruction import codebook_usage, evaluate_reconstruction

__all__ = ["codebook_usage", "evaluate_reconstruction"]
