"""The training engine shared by every task: loop, checkpoints, objectives, evaluation, distribution."""

from cinn.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cinn.engine.distributed import ProcessGroup, close_process_group, init_process_group, resolve_device
from cinn.engine.evaluate import BitsPerDim, evaluate_bits_per_dim, prepared_batches
from cinn.engine.objective import DequantizedImages, GaussianNoiseImages, Objective
from cinn.engine.trainer import NonFiniteTrainingError, TrainConfig, Trainer, build_optimizer, trained_weights

__all__ = [
    "BitsPerDim",
    "CheckpointError",
    "DequantizedImages",
    "GaussianNoiseImages",
    "NonFiniteTrainingError",
    "Objective",
    "ProcessGroup",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "close_process_group",
    "evaluate_bits_per_dim",
    "init_process_group",
    "load_checkpoint",
    "prepared_batches",
    "resolve_device",
    "save_checkpoint",
    "trained_weights",
]
