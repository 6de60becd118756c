"""Helpers for tests, examples and benchmarks (not used by the library itself)."""

from .local_datasets import LOCAL_FORMATS, LOCAL_KINDS, PHOTO_NAMES, build_local_dataset

__all__ = ["LOCAL_FORMATS", "LOCAL_KINDS", "PHOTO_NAMES", "build_local_dataset"]
