"""Mixed-precision training: ``fp16: {loss_scale: dynamic | N}`` and ``det train --amp``.

On CUDA the forward pass (and loss) runs under ``torch.autocast`` in float16, the loss is
multiplied by a scale before ``backward`` and the gradients divided by it before clipping and the
optimizer step (``torch.amp.GradScaler``), as mmcv's ``Fp16OptimizerHook`` does on PyTorch >= 1.6:

- ``loss_scale: dynamic`` (``--amp``): the scale starts at 65536, halves when a step's gradients
  hold inf/NaN (the step is skipped) and doubles after 2000 clean steps;
- ``loss_scale: 512.0`` (also the default, as mmcv's): a fixed scale (steps with inf/NaN gradients are
  still skipped);
- ``loss_scale: {init_scale: ..., growth_interval: ...}``: ``GradScaler``'s arguments.

``fp16: {dtype: bfloat16}`` (det's extension) autocasts to bfloat16 on GPUs that support it; it
needs no scaler. Checkpoints keep the scaler's state in ``meta.fp16.loss_scaler`` (mmcv's place)
and ``--resume`` restores it.

A CPU has no fast float16/bfloat16 path here, so ``fp16`` / ``--amp`` on a CPU is refused with a
:class:`~detcli.errors.ConfigError` rather than silently training in float32 or slowly in half.
:data:`ALLOW_CPU` lifts the refusal; it exists for tests, which check the wiring (autocast dtype,
scaler state through a checkpoint) with CPU autocast on a tiny model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from detcli.engine.settings import Fp16Settings
from detcli.errors import ConfigError

#: Allow autocast on a CPU (tests only: CPU autocast is slower than float32 training here).
ALLOW_CPU = False

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class MixedPrecision:
    """Autocast and loss scaling for one run.

    Args:
        settings: the ``fp16`` settings.
        device: the training device.

    Attributes:
        dtype: the autocast dtype.
        scaler: the ``GradScaler`` (float16), or None (bfloat16).
        static_scale: the fixed scale, or None (dynamic).
    """

    def __init__(self, settings: Fp16Settings, device: torch.device) -> None:
        self.device_type = device.type
        self.dtype = DTYPES[settings.dtype]
        self.static_scale: float | None = None
        self.scaler: torch.amp.GradScaler | None = None
        if self.dtype is torch.float16:
            scale = settings.loss_scale
            if isinstance(scale, Mapping):
                self.scaler = torch.amp.GradScaler(device.type, **dict(scale))
            elif scale == "dynamic":
                self.scaler = torch.amp.GradScaler(device.type)
            else:
                self.static_scale = float(scale)
                self.scaler = torch.amp.GradScaler(device.type, init_scale=self.static_scale)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        with torch.autocast(self.device_type, dtype=self.dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step (skipped when a gradient is inf/NaN) and update the scale."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update(self.static_scale)

    @property
    def scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"loss_scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        saved = (state or {}).get("loss_scaler")
        if self.scaler is not None and saved:
            self.scaler.load_state_dict(dict(saved))


def build_mixed_precision(settings: Fp16Settings | None, device: torch.device) -> MixedPrecision | None:
    """The run's :class:`MixedPrecision`, or None without ``fp16`` / ``--amp``.

    Raises:
        ConfigError: on a CPU (unless :data:`ALLOW_CPU`), or bfloat16 on a GPU without it.
    """
    if settings is None:
        return None
    if device.type == "cuda":
        if settings.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"fp16.dtype: bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                              "use fp16: {loss_scale: dynamic} (float16 with a scaler)")
    elif device.type == "cpu" and not ALLOW_CPU:
        raise ConfigError(
            "fp16 / --amp: mixed precision needs a CUDA GPU; this CPU has no fast float16/bfloat16 path, so det "
            "refuses rather than train slower or silently in float32: remove the fp16 section "
            "(--cfg-options fp16=null) and --amp, or train with --device cuda"
        )
    elif device.type not in ("cpu", "cuda"):
        raise ConfigError(f"fp16 / --amp: mixed precision is not supported on {device.type}")
    return MixedPrecision(settings, device)


__all__ = ["ALLOW_CPU", "DTYPES", "MixedPrecision", "build_mixed_precision"]
