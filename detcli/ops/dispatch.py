"""Choice of the compute backend behind :mod:`detcli.ops`.

Backends:

- ``torchvision``: ``torchvision.ops.nms`` / ``roi_align`` (any device; traceable, used by ONNX export).
- ``cupy``: the RawKernels of ``kernels/*.cu`` (CUDA tensors, CuPy installed).
- ``torch``: NMS in plain PyTorch (:mod:`detcli.ops.reference`), faster than torchvision's CPU kernel
  for large inputs; RoIAlign is torchvision's kernel with the RoIs split over the CPU threads (the
  kernel itself uses one core).
- ``auto`` (default): CUDA tensors use ``cupy`` when it can run (otherwise torchvision, with one
  warning); CPU tensors use torchvision for NMS under :data:`TORCH_NMS_MIN_BOXES` boxes and the
  ``torch`` path for larger NMS and for RoIAlign.

Precedence: :func:`use_backend` (a context, e.g. ONNX export forcing ``torchvision``) over
:func:`set_backend` (the ``--ops`` option) over ``$DET_OPS``. Forcing ``cupy`` where it cannot work
raises :class:`~detcli.errors.KernelError`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor

from detcli.errors import KernelError, did_you_mean

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "cupy", "torch", "torchvision")
TORCH_NMS_MIN_BOXES = 2000  # auto mode: CPU NMS from this many boxes uses the plain-PyTorch path
TORCH_NMS_MAX_ROUNDS = 64  # auto mode: longer suppression chains fall back to torchvision
#: auto mode: boxes whose candidate pairs exceed this share of all pairs go to torchvision (overlapping
#: candidates, as RPN proposals and dense-head outputs of one class, are several times faster there; 1/16 is
#: 62 pairs per box at 2000 boxes, 625 at 20000; benchmarks/nms_dispatch.py)
TORCH_NMS_MAX_PAIR_SHARE = 1 / 16
ROI_ALIGN_SPLIT_MIN_ROIS = 32  # CPU RoIAlign is split over threads only with this many RoIs per thread

_forced: str | None = None
_context = threading.local()
_warned_fallback = False


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


class TorchBackend(TorchvisionBackend):
    """Plain-PyTorch NMS; inputs it does not cover (negative threshold, non-finite boxes) go to
    torchvision. RoIAlign is torchvision's CPU kernel, which runs on one core: with
    ``torch.get_num_threads() > 1`` and at least ``2 * ROI_ALIGN_SPLIT_MIN_ROIS`` RoIs, the RoIs are
    dealt out to that many threads (:func:`_split_roi_align`); every RoI is pooled by the same kernel,
    so the values are identical."""

    name = "torch"

    def __init__(self, max_rounds: int | None = None, max_pair_share: float | None = None) -> None:
        self.max_rounds = max_rounds
        self.max_pair_share = max_pair_share

    def nms(self, boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
        from detcli.ops.reference import SparseNMSDeclined, nms_sparse, supported

        if not supported(boxes, iou_threshold):
            return super().nms(boxes, scores, iou_threshold)
        try:
            return nms_sparse(boxes, scores, iou_threshold, max_rounds=self.max_rounds,
                              max_pair_share=self.max_pair_share)
        except SparseNMSDeclined as exc:
            logger.debug("plain-PyTorch NMS declined (%s); using torchvision", exc)
            return super().nms(boxes, scores, iou_threshold)


    def roi_align(
        self, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
        sampling_ratio: int, aligned: bool,
    ) -> Tensor:
        workers = min(torch.get_num_threads(), rois.shape[0] // ROI_ALIGN_SPLIT_MIN_ROIS)
        if input.device.type != "cpu" or workers < 2 or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
        return _split_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned, workers)


_pool: tuple[int, ThreadPoolExecutor] | None = None


def _thread_pool() -> ThreadPoolExecutor:
    """A process-wide pool (re-created in a forked child, whose copy has no threads)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1),
                                                 thread_name_prefix="det-ops"))
    return _pool[1]


def run_parts(fn: Callable[[int], Any], count: int) -> list[Any]:
    """``[fn(0), ..., fn(count - 1)]``, ``fn(0)`` in this thread and the others in the pool, each
    thread in the caller's grad and inference modes (both are thread-local)."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def call(j: int) -> Tensor:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(j)

    futures = [_thread_pool().submit(call, j) for j in range(1, count)]
    return [call(0)] + [f.result() for f in futures]


class _SplitRoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign kernels (forward and backward) over threads, each on a contiguous
    share of the RoIs (so the outputs concatenate in order). The kernels release the GIL, so the
    threads run in parallel; the backward sums the per-thread input gradients."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                sampling_ratio: int, aligned: bool, workers: int) -> Tensor:
        kernel = torch.ops.torchvision.roi_align
        bounds = [rois.shape[0] * j // workers for j in range(workers + 1)]
        pooled = run_parts(lambda j: kernel(input, rois[bounds[j]:bounds[j + 1]], spatial_scale, output_size[0],
                                             output_size[1], sampling_ratio, aligned), workers)
        ctx.save_for_backward(rois)
        ctx.settings = (tuple(input.shape), output_size, spatial_scale, sampling_ratio, aligned, bounds)
        return torch.cat(pooled)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (rois,) = ctx.saved_tensors
        (b, c, h, w), (oh, ow), spatial_scale, sampling_ratio, aligned, bounds = ctx.settings
        kernel = torch.ops.torchvision._roi_align_backward
        grad_output = grad_output.contiguous()
        grads = run_parts(lambda j: kernel(grad_output[bounds[j]:bounds[j + 1]], rois[bounds[j]:bounds[j + 1]],
                                            spatial_scale, oh, ow, b, c, h, w, sampling_ratio, aligned),
                           len(bounds) - 1)
        grad_input = grads[0]
        for g in grads[1:]:
            grad_input = grad_input + g
        return grad_input, None, None, None, None, None, None


def _split_roi_align(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
    aligned: bool, workers: int,
) -> Tensor:
    """RoIAlign of torchvision's CPU kernel with the RoIs (forward and backward) split over ``workers`` threads."""
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    input = input.contiguous()  # the kernel's layout, converted once rather than per thread
    return _SplitRoIAlign.apply(input, rois.to(input.dtype).contiguous(), tuple(output_size), float(spatial_scale),
                                int(sampling_ratio), bool(aligned), int(workers))


_TORCHVISION = TorchvisionBackend()
_TORCH = TorchBackend()
_TORCH_AUTO = TorchBackend(max_rounds=TORCH_NMS_MAX_ROUNDS, max_pair_share=TORCH_NMS_MAX_PAIR_SHARE)


def _check_name(name: str, source: str) -> str:
    if name not in BACKEND_NAMES:
        raise KernelError(
            f"{source}{name!r} is not an ops backend{did_you_mean(name, BACKEND_NAMES)} "
            f"(choose from: {', '.join(BACKEND_NAMES)})"
        )
    return name


def set_backend(name: str | None) -> None:
    """Force a backend for this process (``None`` returns to ``$DET_OPS``/auto)."""
    global _forced
    _forced = None if name is None else _check_name(name, "--ops ")


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` inside the ``with`` block (this thread), over ``--ops`` and ``$DET_OPS``.

    Example:
        >>> with use_backend("torchvision"):   # e.g. while tracing for ONNX export
        ...     keep = nms(boxes, scores, 0.5)  # doctest: +SKIP
    """
    _check_name(name, "")
    previous = getattr(_context, "name", None)
    _context.name = name
    try:
        yield
    finally:
        _context.name = previous


def requested_backend() -> str:
    """The backend name asked for (``auto`` unless overridden)."""
    override = getattr(_context, "name", None)
    if override is not None:
        return override
    if _forced is not None:
        return _forced
    return _check_name(os.environ.get("DET_OPS", "auto") or "auto", "DET_OPS=")


def _cupy_reason() -> str | None:
    from detcli.ops.cupy_backend import unavailable_reason

    return unavailable_reason()


def backend_for(tensor: Tensor, num_boxes: int | None = None) -> Backend:
    """Return the backend that runs an op on ``tensor``.

    Args:
        tensor: the op's main input (boxes or feature maps).
        num_boxes: for NMS, the number of boxes (auto mode picks the CPU path by size).

    Raises:
        KernelError: ``cupy`` is forced but cannot run on this tensor or machine.
    """
    global _warned_fallback
    name = requested_backend()
    if name == "torchvision":
        return _TORCHVISION
    if name == "torch":
        return _TORCH
    if name == "cupy":
        if not tensor.is_cuda:
            raise KernelError(
                f"ops backend 'cupy' needs CUDA tensors, got a tensor on {tensor.device}; "
                "use --ops auto (or DET_OPS=auto) to run CPU tensors with torchvision"
            )
        reason = _cupy_reason()
        if reason is not None:
            raise KernelError(f"ops backend 'cupy' cannot run: {reason}")
        from detcli.ops.cupy_backend import SUPPORTED_DTYPES, CupyBackend

        if tensor.dtype not in SUPPORTED_DTYPES:
            raise KernelError(f"ops backend 'cupy' supports float32 and float16 tensors, got {tensor.dtype}; use --ops auto")
        return CupyBackend()
    # auto
    if tensor.is_cuda:
        from detcli.ops.cupy_backend import SUPPORTED_DTYPES, CupyBackend

        reason = _cupy_reason()
        if reason is None and tensor.dtype in SUPPORTED_DTYPES:
            return CupyBackend()
        if reason is not None and not _warned_fallback:
            _warned_fallback = True
            logger.warning("CuPy kernels unavailable (%s); using torchvision.ops", reason)
        return _TORCHVISION
    if num_boxes is None:  # RoIAlign: torchvision's kernel, split over the CPU threads
        return _TORCH_AUTO
    if num_boxes >= TORCH_NMS_MIN_BOXES:
        return _TORCH_AUTO
    return _TORCHVISION


def active_backend_name(device: str = "cpu") -> str:
    """Name of the backend used for tensors on ``device`` (for ``det env``), without touching the GPU."""
    name = requested_backend()
    if name != "auto":
        return name
    if torch.device(device).type == "cuda":
        return "cupy" if _cupy_reason() is None else "torchvision"
    return (f"torchvision (nms of >= {TORCH_NMS_MIN_BOXES} boxes that overlap little, and roi_align: torch)")


def available_backends(device: str = "cpu") -> list[str]:
    """Concrete backends that can run on ``device`` on this machine."""
    names = ["torchvision", "torch"]
    if torch.device(device).type == "cuda" and _cupy_reason() is None:
        names.insert(0, "cupy")
    return names
