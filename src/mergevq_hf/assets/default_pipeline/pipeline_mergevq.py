# For diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True): the pipeline class.
# mergevq_hf.MergeVQPipeline.from_pretrained(folder) loads this folder without running this file.
from mergevq_hf import MergeVQPipeline  # noqa: F401
