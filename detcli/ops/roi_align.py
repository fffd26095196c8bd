"""RoIAlign entry point (torchvision-shaped) and its module wrapper."""

from __future__ import annotations

from torch import Tensor, nn

from detcli.ops.dispatch import backend_for


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
        KernelError: the ``cupy`` backend is forced but cannot run (see :mod:`detcli.ops.dispatch`).
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must have shape (N, C, H, W), got {tuple(input.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must have shape (K, 5) (batch_index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    if rois.numel() == 0:
        return input.new_zeros((0, input.shape[1], *output_size))
    return backend_for(input).roi_align(input, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))


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
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )
