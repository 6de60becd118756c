from .pipeline_mergevq import MergeVQPipeline, MergeVQPipelineOutput

__all__ = ["MergeVQPipeline", "MergeVQPipelineOutput"]
