"""The training engine shared by every task: loop, checkpoints, objectives, evaluation, distribution."""

from cinn.engine.checkpoint import (
    CheckpointError,
    TrainedModel,
    load,
    load_checkpoint,
    load_trained,
    model_info,
    save_checkpoint,
    trained_weights,
)
from cinn.engine.distributed import ProcessGroup, close_process_group, init_process_group, resolve_device
from cinn.engine.evaluate import BitsPerDim, evaluate_bits_per_dim, per_image_bits_per_dim, prepared_batches
from cinn.engine.hooks import Hook, Samples, TrainingRun
from cinn.engine.metrics import StepResult
from cinn.engine.objective import DequantizedImages, GaussianNoiseImages, Objective
from cinn.engine.train_config import TrainConfig, build_optimizer
from cinn.engine.trainer import DensityModel, NonFiniteTrainingError, Trainer

__all__ = [
    "BitsPerDim",
    "CheckpointError",
    "DensityModel",
    "DequantizedImages",
    "GaussianNoiseImages",
    "Hook",
    "NonFiniteTrainingError",
    "Objective",
    "ProcessGroup",
    "Samples",
    "StepResult",
    "TrainConfig",
    "TrainedModel",
    "Trainer",
    "TrainingRun",
    "build_optimizer",
    "close_process_group",
    "evaluate_bits_per_dim",
    "init_process_group",
    "load",
    "load_checkpoint",
    "load_trained",
    "model_info",
    "per_image_bits_per_dim",
    "prepared_batches",
    "resolve_device",
    "save_checkpoint",
    "trained_weights",
]
