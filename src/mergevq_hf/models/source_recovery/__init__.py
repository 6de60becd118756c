from .configuration_source_recovery import SOURCE_LOSS_TYPES, SourceRecoveryConfig
from .modeling_source_recovery import (
    SourceRecoveryModel,
    SourceRecoveryOutput,
    SourceRecoveryPreTrainedModel,
    source_recovery_loss,
)

__all__ = [
    "SOURCE_LOSS_TYPES",
    "SourceRecoveryConfig",
    "SourceRecoveryModel",
    "SourceRecoveryOutput",
    "SourceRecoveryPreTrainedModel",
    "source_recovery_loss",
]
