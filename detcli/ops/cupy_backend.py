"""CuPy backend: the RawKernels of ``kernels/nms.cu`` and ``kernels/roi_align.cu`` on CUDA tensors.

Each source is compiled with NVRTC once per GPU architecture (:mod:`detcli.ops.nvrtc_build`, cached
in memory and on disk) and loaded with ``cupy.RawModule``. Kernels run on torch's current CUDA stream
(``cupy.cuda.ExternalStream``), and tensors are shared with CuPy through DLPack, without copies; the
outputs are torch tensors allocated by torch.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from detcli.errors import KernelError
from detcli.ops.nvrtc_build import INSTALL_HINT, cached_cubin

logger = logging.getLogger(__name__)

NMS_BLOCK = 64  # boxes per mask word; must match NMS_BLOCK in kernels/nms.cu
NMS_CHUNK_BOXES = 16384  # boxes per suppression bitmask (16384^2 / 8 bytes = 32 MiB); larger inputs go in chunks
GATHER_THREADS = 256  # threads of the single-block nms_gather_keep launch
ROI_THREADS = 256  # threads per block of the grid-stride RoIAlign kernels
MAX_ROI_BLOCKS = 4096
SUPPORTED_DTYPES = (torch.float32, torch.float16)


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the CuPy kernels cannot run in this process, or ``None`` when they can."""
    try:
        import cupy
    except Exception as e:
        return f"CuPy is not importable ({type(e).__name__}: {e}); fix: {INSTALL_HINT}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as e:
        return f"CuPy cannot use the CUDA driver ({e}); check that the cupy-cudaXXx package matches torch's CUDA"
    return None


def float_threshold(iou_threshold: float) -> float:
    """Largest float32 ``<= iou_threshold``: a float32 IoU ``x`` then satisfies
    ``x > result`` exactly when ``float(x) > iou_threshold`` (torchvision's double comparison)."""
    f = np.float32(iou_threshold)
    if float(f) > iou_threshold:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


@functools.cache
def _module(name: str, device_index: int) -> Any:
    import cupy

    major, minor = torch.cuda.get_device_capability(device_index)
    arch = f"sm_{major}{minor}"
    path = cached_cubin(name, arch)
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(path=str(path))


def _kernel(name: str, function: str, device: torch.device) -> Any:
    return _module(name, device.index if device.index is not None else torch.cuda.current_device()).get_function(function)


class _Launch:
    """Context that makes CuPy use ``device`` and torch's current stream on it."""

    def __init__(self, device: torch.device) -> None:
        import cupy

        self._cupy = cupy
        self._device = cupy.cuda.Device(device.index if device.index is not None else torch.cuda.current_device())
        self._stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream)

    def __enter__(self) -> _Launch:
        self._device.__enter__()
        self._stream.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.__exit__(*exc)
        self._device.__exit__(*exc)

    def array(self, t: Tensor) -> Any:
        """The CuPy view of ``t`` (DLPack, no copy)."""
        return self._cupy.from_dlpack(t)


def _check(t: Tensor, what: str) -> None:
    if not t.is_cuda:
        raise KernelError(f"the CuPy kernels need CUDA tensors, but {what} is on {t.device}; use DET_OPS=auto or torchvision")
    if t.dtype not in SUPPORTED_DTYPES:
        raise KernelError(f"the CuPy kernels support float32 and float16, but {what} is {t.dtype}; use DET_OPS=auto or torchvision")


def nms_mask_bytes(num_boxes: int, chunk_boxes: int | None = None) -> int:
    """Bytes of the largest suppression bitmask :func:`nms` allocates for ``num_boxes`` boxes
    (``chunk_boxes`` defaults to :data:`NMS_CHUNK_BOXES`; ``chunk_boxes=num_boxes`` is one bitmask for all,
    the unchunked n^2 / 8 bytes)."""
    rows = min(num_boxes, NMS_CHUNK_BOXES if chunk_boxes is None else chunk_boxes)
    return rows * ((rows + NMS_BLOCK - 1) // NMS_BLOCK) * 8


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Bitmask NMS on the GPU; same contract and result as :func:`torchvision.ops.nms`.

    Up to :data:`NMS_CHUNK_BOXES` boxes, one bitmask of ``n * ceil(n / 64)`` words holds every
    suppression; larger inputs go through in chunks of that many boxes in score order, so the bitmask
    never exceeds :func:`nms_mask_bytes` (32 MiB) and the other buffers grow linearly (about 48 bytes
    per box). The keep list is the same (see ``kernels/nms.cu``).
    """
    _check(boxes, "boxes")
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    boxes_sorted = boxes.index_select(0, order).float().contiguous()  # (N, 4)
    threshold = np.float32(float_threshold(iou_threshold))
    chunk = max(1, int(NMS_CHUNK_BOXES))
    with _Launch(device) as launch:
        if n <= chunk:
            return _nms_bitmask(launch, boxes_sorted, order, threshold)
        positions = torch.arange(n, dtype=torch.int64, device=device)  # (N,) index into the sorted boxes
        kept_boxes = torch.empty((n, 4), dtype=torch.float32, device=device)  # kept so far, in score order
        kept_parts = []
        num_kept = 0
        for start in range(0, n, chunk):
            part = boxes_sorted[start:start + chunk]  # (C, 4)
            part_positions = positions[start:start + chunk]  # (C,)
            if num_kept > 0:
                suppressed = torch.zeros(part.shape[0], dtype=torch.int32, device=device)  # (C,)
                _kernel("nms.cu", "nms_suppressed_by", device)(
                    ((part.shape[0] + NMS_BLOCK - 1) // NMS_BLOCK,), (NMS_BLOCK,),
                    (launch.array(kept_boxes[:num_kept]), np.int32(num_kept), launch.array(part),
                     np.int32(part.shape[0]), threshold, launch.array(suppressed)),
                )
                alive = suppressed == 0
                part, part_positions = part[alive].contiguous(), part_positions[alive]
                if part.shape[0] == 0:
                    continue
            kept = _nms_bitmask(launch, part, part_positions, threshold)  # sorted positions, in score order
            kept_boxes[num_kept:num_kept + kept.shape[0]] = boxes_sorted[kept]
            num_kept += kept.shape[0]
            kept_parts.append(kept)
        return order[torch.cat(kept_parts)]


def _nms_bitmask(launch: _Launch, boxes_sorted: Tensor, labels: Tensor, threshold: np.float32) -> Tensor:
    """Launches 1 and 2 of ``kernels/nms.cu`` on ``boxes_sorted`` (float32[n, 4], n >= 1, score order):
    the ``labels`` (int64[n]) of the kept boxes, in score order."""
    n = boxes_sorted.shape[0]
    device = boxes_sorted.device
    col_blocks = (n + NMS_BLOCK - 1) // NMS_BLOCK
    mask = torch.empty((n, col_blocks), dtype=torch.int64, device=device)  # uint64 words
    removed = torch.empty(col_blocks, dtype=torch.int64, device=device)
    keep = torch.empty(n, dtype=torch.int64, device=device)
    num_keep = torch.empty(1, dtype=torch.int32, device=device)
    _kernel("nms.cu", "nms_mask", device)(
        (col_blocks, col_blocks), (NMS_BLOCK,),
        (launch.array(boxes_sorted), np.int32(n), threshold, launch.array(mask)),
    )
    _kernel("nms.cu", "nms_gather_keep", device)(
        (1,), (GATHER_THREADS,),
        (launch.array(mask), np.int32(n), launch.array(labels.contiguous()), launch.array(removed),
         launch.array(keep), launch.array(num_keep)),
    )
    return keep[: int(num_keep.item())]


def _roi_args(rois: Tensor, input_shape: torch.Size, output_size: tuple[int, int]) -> tuple[Tensor, int, int]:
    rois = rois.float().contiguous()  # (K, 5)
    total = rois.shape[0] * input_shape[1] * output_size[0] * output_size[1]
    blocks = max(1, min(MAX_ROI_BLOCKS, (total + ROI_THREADS - 1) // ROI_THREADS))
    return rois, total, blocks


def _roi_align_forward(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    input = input.contiguous()  # (N, C, H, W)
    _, channels, height, width = input.shape
    rois, total, blocks = _roi_args(rois, input.shape, output_size)
    output = input.new_empty((rois.shape[0], channels, *output_size))  # (K, C, PH, PW)
    if total == 0:
        return output
    suffix = "f16" if input.dtype == torch.float16 else "f32"
    with _Launch(input.device) as launch:
        _kernel("roi_align.cu", f"roi_align_forward_{suffix}", input.device)(
            (blocks,), (ROI_THREADS,),
            (launch.array(input), launch.array(rois), np.int64(total), np.int32(channels), np.int32(height),
             np.int32(width), np.int32(output_size[0]), np.int32(output_size[1]), np.float32(spatial_scale),
             np.int32(sampling_ratio), np.int32(int(aligned)), launch.array(output)),
        )
    return output


def _roi_align_backward(
    grad_output: Tensor, rois: Tensor, input_shape: torch.Size, dtype: torch.dtype, output_size: tuple[int, int],
    spatial_scale: float, sampling_ratio: int, aligned: bool,
) -> Tensor:
    grad_output = grad_output.to(dtype).contiguous()  # (K, C, PH, PW)
    _, channels, height, width = input_shape
    rois, total, blocks = _roi_args(rois, input_shape, output_size)
    grad_input = torch.zeros(input_shape, dtype=torch.float32, device=grad_output.device)  # (N, C, H, W)
    if total > 0:
        suffix = "f16" if dtype == torch.float16 else "f32"
        with _Launch(grad_output.device) as launch:
            _kernel("roi_align.cu", f"roi_align_backward_{suffix}", grad_output.device)(
                (blocks,), (ROI_THREADS,),
                (launch.array(grad_output), launch.array(rois), np.int64(total), np.int32(channels),
                 np.int32(height), np.int32(width), np.int32(output_size[0]), np.int32(output_size[1]),
                 np.float32(spatial_scale), np.int32(sampling_ratio), np.int32(int(aligned)),
                 launch.array(grad_input)),
            )
    return grad_input.to(dtype)


class RoIAlignFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward are the CuPy kernels; ``rois`` get no gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
        sampling_ratio: int, aligned: bool,
    ) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.input_shape = input.shape
        ctx.dtype = input.dtype
        ctx.params = (output_size, spatial_scale, sampling_ratio, aligned)
        return _roi_align_forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (rois,) = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = _roi_align_backward(grad_output, rois, ctx.input_shape, ctx.dtype, *ctx.params)
        return grad_input, None, None, None, None, None


def roi_align(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign with the CuPy kernels; same contract and result as :func:`torchvision.ops.roi_align`."""
    _check(input, "input")
    if not rois.is_cuda or rois.device != input.device:
        raise KernelError(f"rois must be on the same CUDA device as input ({input.device}), got {rois.device}")
    return RoIAlignFunction.apply(input, rois, output_size, spatial_scale, sampling_ratio, aligned)


class CupyBackend:
    """Backend object for :mod:`detcli.ops.dispatch`."""

    name = "cupy"

    def nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        return nms(boxes, scores, iou_threshold)

    def roi_align(
        self, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
        sampling_ratio: int, aligned: bool,
    ) -> Tensor:
        return roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
