from .configuration_random_ar import PRESETS, RandomARConfig
from .generation import RandomAROutput, decode_schedule, generate_random_order, sample_positions
from .modeling_random_ar import RandomARCausalLMOutput, RandomARForCausalLM, RandomARPreTrainedModel

__all__ = [
    "PRESETS",
    "RandomARCausalLMOutput",
    "RandomARConfig",
    "RandomARForCausalLM",
    "RandomAROutput",
    "RandomARPreTrainedModel",
    "decode_schedule",
    "generate_random_order",
    "sample_positions",
]
