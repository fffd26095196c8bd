"""Choice of the compute backend behind :mod:`detcli.ops`.

``DET_OPS=auto|cupy|torchvision`` (or :func:`set_backend`, used by the ``--ops`` option) forces a
backend; ``auto`` (default) uses torchvision.ops. The kernels issue adds the CuPy backend.
"""

from __future__ import annotations

import os
from typing import Protocol

from torch import Tensor

from detcli.errors import KernelError

BACKEND_NAMES = ("auto", "cupy", "torchvision")
_forced: str | None = None


class Backend(Protocol):
    name: str

    def nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor: ...

    def roi_align(
        self, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
        sampling_ratio: int, aligned: bool,
    ) -> Tensor: ...


class TorchvisionBackend:
    name = "torchvision"

    def nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        import torchvision

        return torchvision.ops.nms(boxes, scores, iou_threshold)

    def roi_align(
        self, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
        sampling_ratio: int, aligned: bool,
    ) -> Tensor:
        import torchvision

        return torchvision.ops.roi_align(
            input, rois.to(input.dtype), output_size, spatial_scale, sampling_ratio, aligned
        )


_TORCHVISION = TorchvisionBackend()


def set_backend(name: str | None) -> None:
    """Force a backend for this process (``None`` returns to ``$DET_OPS``/auto)."""
    global _forced
    if name is not None and name not in BACKEND_NAMES:
        raise KernelError(f"unknown ops backend '{name}' (choose from: {', '.join(BACKEND_NAMES)})")
    _forced = name


def requested_backend() -> str:
    name = _forced or os.environ.get("DET_OPS", "auto") or "auto"
    if name not in BACKEND_NAMES:
        raise KernelError(f"DET_OPS={name!r} is not a backend (choose from: {', '.join(BACKEND_NAMES)})")
    return name


def backend_for(tensor: Tensor) -> Backend:
    """Return the backend that runs ops on ``tensor``."""
    name = requested_backend()
    if name == "cupy":
        raise KernelError("DET_OPS=cupy: the CuPy kernels are not available in this build; use DET_OPS=torchvision")
    return _TORCHVISION


def active_backend_name(device: str = "cpu") -> str:
    """Name of the backend used for tensors on ``device`` (for ``det env``)."""
    import torch

    return backend_for(torch.empty(0, device="cpu")).name
