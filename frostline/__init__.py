"""frostline: progressive layer freezing for PyTorch.

Layers that have finished learning stop being updated: they leave the optimizer, their backward
pass is skipped, and (with the activation cache) their forward pass too.
"""

from .cka import MinibatchCKA, linear_cka, minibatch_cka
from .exploit.cost import CostModel, UnitCost, estimate_speedup, measure_costs
from .exploit.distributed import DecisionSync, ReplicatedModel
from .exploit.timing import StepTimeModel, profile_step_times
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DatasetNotFoundError,
    DistributedError,
    FrostlineError,
    ModelError,
)
from .freezer import FreezeEvent, Freezer, unfreeze
from .policies import (
    AutoFreeze,
    CKAOracle,
    FreezeOut,
    FreezePolicy,
    LinearFreezing,
    NoFreezing,
    Progress,
    SmartFRZ,
    create_policy,
    freezeout_times,
    list_policies,
)
from .signals import ReferenceCKA, SummedGradients, TailoredWeights

from .units import FreezeUnit, freeze_units, trace_execution_order

__version__ = "0.1.0"

__all__ = [
    "AutoFreeze",
    "CKAOracle",
    "CheckpointError",
    "ConfigError",
    "CostModel",
    "DataError",
    "DatasetNotFoundError",
    "DecisionSync",
    "DistributedError",
    "FreezeEvent",
    "FreezeOut",
    "FreezePolicy",
    "FreezeUnit",
    "Freezer",
    "unfreeze",
    "FrostlineError",
    "LinearFreezing",
    "MinibatchCKA",
    "ModelError",
    "ReplicatedModel",
    "NoFreezing",
    "Progress",
    "ReferenceCKA",
    "SmartFRZ",
    "StepTimeModel",
    "SummedGradients",
    "TailoredWeights",
    "UnitCost",
    "create_policy",
    "estimate_speedup",
    "freeze_units",
    "freezeout_times",
    "linear_cka",
    "list_policies",
    "measure_costs",
    "minibatch_cka",
    "profile_step_times",
    "trace_execution_order",
]
