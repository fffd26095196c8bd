"""Training and testing: the runner, hooks, optimizers, lr schedules, checkpoints and logs.

The CLI calls :func:`train`, :func:`test`, :func:`load_model` and :func:`validate_config` and
renders what they return; the engine never prints.
"""

from detcli.engine.builders import LoadedModel, load_checkpoint_config, load_model
from detcli.engine.checkpoint import load_checkpoint
from detcli.engine.dist import get_dist_info, is_main_process
from detcli.engine.hooks import (
    HOOKS,
    CheckInvalidLossHook,
    CheckpointHook,
    EvalHook,
    Hook,
    LoggerHook,
    NumClassCheckHook,
)
from detcli.engine.lr import LrSchedule
from detcli.engine.optim import build_optimizer, scale_lr
from detcli.engine.progress import ProgressCallback, ProgressEvent
from detcli.engine.runner import Runner, parse_losses
from detcli.engine.tester import TestResult, evaluate_results_file, resolve_test_config, run_inference, test
from detcli.engine.trainer import TrainResult, train
from detcli.engine.validate import validate_config

__all__ = [
    "HOOKS",
    "CheckInvalidLossHook",
    "CheckpointHook",
    "EvalHook",
    "Hook",
    "LoadedModel",
    "LoggerHook",
    "LrSchedule",
    "NumClassCheckHook",
    "ProgressCallback",
    "ProgressEvent",
    "Runner",
    "TestResult",
    "TrainResult",
    "build_optimizer",
    "get_dist_info",
    "is_main_process",
    "load_checkpoint",
    "load_checkpoint_config",
    "load_model",
    "parse_losses",
    "run_inference",
    "scale_lr",
    "test",
    "train",
    "validate_config",
    "evaluate_results_file",
    "resolve_test_config",
]
