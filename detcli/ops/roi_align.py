"""RoIAlign entry point (torchvision-shaped) and its module wrapper."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detcli.errors import KernelError
from detcli.ops.dispatch import backend_for

#: Most samples per bin along one axis. With ``sampling_ratio <= 0`` (adaptive) a RoI gets
#: ``ceil(roi_side * spatial_scale / output_side)`` samples per bin and axis, all summed by ONE GPU thread
#: (and their product overflows a 32-bit int near 3.3e5 feature-map pixels); a RoI needing more than this
#: is refused, as is a fixed ``sampling_ratio`` above it. 512 allows a RoI of 3584 feature-map pixels for
#: a 7x7 output (a whole 1333x800 image at stride 1 needs 191); clip caller-supplied RoIs to the image.
MAX_SAMPLES_PER_BIN_SIDE = 512


def check_rois(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
    aligned: bool,
) -> None:
    """Refuse RoIs no kernel may run on, for every backend, before any kernel runs.

    A RoI is refused when its batch index is not an integer in ``[0, N)`` (the CUDA kernels would read
    and, in the backward, write outside the feature maps), when a value is NaN or infinite (converted to
    an int in the kernel: undefined), or when adaptive sampling would need more than
    :data:`MAX_SAMPLES_PER_BIN_SIDE` samples per bin side. One device sync (``any``) when all is well.

    Raises:
        KernelError: naming the first bad RoI (its row in ``rois``), its values, how many are bad, and a fix.
    """
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise KernelError(f"roi_align: spatial_scale must be a positive finite number, got {spatial_scale}")
    if sampling_ratio > MAX_SAMPLES_PER_BIN_SIDE:
        raise KernelError(
            f"roi_align: sampling_ratio={sampling_ratio} is above the limit of {MAX_SAMPLES_PER_BIN_SIDE} samples "
            "per bin side; use a smaller sampling_ratio (mmdet uses 0 or 2)"
        )
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return  # traced graphs (ONNX export) cannot hold data-dependent checks
    with torch.no_grad():
        r = rois.detach().double()  # (K, 5)
        index = r[:, 0]
        finite = torch.isfinite(r).all(dim=1)
        in_batch = (index >= 0) & (index < input.shape[0]) & (index == torch.floor(index))
        bad = ~finite | ~in_batch
        grid = None
        if sampling_ratio <= 0:
            height = (r[:, 4] - r[:, 2]) * spatial_scale
            width = (r[:, 3] - r[:, 1]) * spatial_scale
            if not aligned:
                height, width = height.clamp(min=1), width.clamp(min=1)
            grid = torch.maximum(torch.ceil(height / output_size[0]), torch.ceil(width / output_size[1]))
            bad |= finite & (grid > MAX_SAMPLES_PER_BIN_SIDE)
        if not bool(bad.any()):
            return
        row = int(bad.nonzero()[0, 0])
        count = int(bad.sum())
        values = ", ".join(f"{v:g}" for v in r[row].tolist())
        others = f" ({count - 1} more RoI{'s' if count > 2 else ''} also invalid)" if count > 1 else ""
        where = f"roi_align: RoI {row} (batch_index, x1, y1, x2, y2) = ({values})"
        if not bool(finite[row]):
            raise KernelError(f"{where} has a NaN or infinite value{others}; RoIs must be finite")
        if not bool(in_batch[row]):
            raise KernelError(
                f"{where} has batch index {r[row, 0].item():g}, but the input holds {input.shape[0]} feature "
                f"map{'s' if input.shape[0] != 1 else ''} (valid: integers 0..{input.shape[0] - 1}){others}"
            )
        assert grid is not None
        raise KernelError(
            f"{where} needs {int(grid[row])} adaptive samples per bin side at spatial_scale={spatial_scale:g} "
            f"and output {output_size[0]}x{output_size[1]}, above the limit of {MAX_SAMPLES_PER_BIN_SIDE}{others}; "
            "clip the RoIs to the image or set sampling_ratio > 0"
        )


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """Average of bilinear samples in each output bin of each RoI (differentiable).

    Args:
        input (Tensor[N, C, H, W]): feature maps.
        rois (Tensor[K, 5]): ``(batch_index, x1, y1, x2, y2)`` in input-image pixels.
        output_size: ``(out_h, out_w)`` or one int.
        spatial_scale: feature-map pixels per image pixel (``1 / stride``).
        sampling_ratio: samples per bin along each axis; ``0`` uses ``ceil(roi_size / output_size)``.
        aligned: shift the RoI by -0.5 pixel so that sample points sit on pixel centres
            (``aligned=True`` is mmdet 2.x's default); ``False`` is the legacy behaviour.

    Returns:
        Tensor[K, C, out_h, out_w]. Samples outside the map contribute zero. Differentiable with
        respect to ``input`` on every backend (the CuPy path runs its own backward kernel).

    Raises:
        ValueError: ``input`` is not 4-D or ``rois`` not (K, 5).
        KernelError: a RoI has a batch index outside ``[0, N)`` or not an integer, a NaN/inf value, or
            needs more adaptive samples than :data:`MAX_SAMPLES_PER_BIN_SIDE` (:func:`check_rois`, every
            backend); or the ``cupy`` backend is forced but cannot run (see :mod:`detcli.ops.dispatch`).
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must have shape (N, C, H, W), got {tuple(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must have shape (K, 5) (batch_index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    if rois.numel() == 0:
        return input.new_zeros((0, input.shape[1], *output_size))
    check_rois(input, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))  # type: ignore[arg-type]
    return backend_for(input).roi_align(input, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))  # type: ignore[arg-type]


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = 0,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )
