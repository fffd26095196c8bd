"""Timing of the ops backends: ``det benchmark kernels`` and ``benchmarks/kernels.py``.

Workloads: NMS over 1k, 5k and 20k random boxes (corners uniform in 0..1000 px, sides 1..101 px,
IoU threshold 0.5) and RoIAlign of 1000 random RoIs on a 256-channel 2x256x256 map (7x7 output,
spatial_scale 1/4, sampling_ratio 2, aligned). Every backend available on the device is timed next to
torchvision's; the result of each backend is checked against torchvision's before it is timed.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from detcli.errors import KernelError
from detcli.ops.dispatch import available_backends, use_backend

logger = logging.getLogger(__name__)

NMS_SIZES = (1000, 5000, 20000)
ROI_ALIGN_SIZE = (256, 1000)  # channels, RoIs
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class BenchmarkRow:
    """One timing.

    Attributes:
        op: ``"nms"`` or ``"roi_align"``.
        size: the workload, e.g. ``"20000 boxes"`` or ``"256ch x 1000 rois"``.
        backend: ``"torchvision"``, ``"torch"`` or ``"cupy"``.
        device: ``"cpu"`` or ``"cuda"``.
        median_s: median wall time of one call, in seconds.
        ratio: torchvision's median divided by this one (> 1: faster than torchvision).
        repeats: number of timed calls.
    """

    op: str
    size: str
    backend: str
    device: str
    median_s: float
    ratio: float
    repeats: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def random_boxes(n: int, generator: torch.Generator, device: str = "cpu") -> tuple[Tensor, Tensor]:
    """``boxes (Tensor[n, 4])`` (x1, y1, x2, y2) in 0..1101 px and ``scores (Tensor[n])`` in [0, 1)."""
    xy = torch.rand(n, 2, generator=generator) * 1000  # (n, 2)
    wh = torch.rand(n, 2, generator=generator) * 100 + 1  # (n, 2)
    return torch.cat([xy, xy + wh], dim=1).to(device), torch.rand(n, generator=generator).to(device)


def random_rois(num_rois: int, batch: int, size: int, generator: torch.Generator, device: str = "cpu") -> Tensor:
    """``rois (Tensor[num_rois, 5])``: (batch_index, x1, y1, x2, y2) within a ``size`` x ``size`` image."""
    idx = torch.randint(0, batch, (num_rois, 1), generator=generator).float()
    xy = torch.rand(num_rois, 2, generator=generator) * size * 0.8
    wh = torch.rand(num_rois, 2, generator=generator) * size * 0.2 + 8
    return torch.cat([idx, xy, xy + wh], dim=1).to(device)


def _median_time(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up (kernel compilation, allocator)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_kernel_benchmark(
    repeats: int = 5,
    devices: tuple[str, ...] | None = None,
    nms_sizes: tuple[int, ...] = NMS_SIZES,
    roi_align_size: tuple[int, int] = ROI_ALIGN_SIZE,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
) -> list[BenchmarkRow]:
    """Time NMS and RoIAlign for every backend available on each device.

    Args:
        repeats: timed calls per measurement (after one warm-up call); the median is reported.
        devices: default ``("cpu",)`` plus ``"cuda"`` when a GPU is present.
        nms_sizes: numbers of boxes.
        roi_align_size: (channels, number of RoIs).
        progress: called with a short description before each measurement.
        seed: seed of the random workloads.

    Returns:
        One row per (op, size, device, backend), torchvision first in each group.

    Raises:
        KernelError: a backend returned a result different from torchvision's.
    """
    import torchvision

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if devices is None:
        devices = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    rows: list[BenchmarkRow] = []
    for device in devices:
        backends = available_backends(device)
        ordered = ["torchvision", *[b for b in backends if b != "torchvision"]]
        g = torch.Generator().manual_seed(seed)
        for n in nms_sizes:
            boxes, scores = random_boxes(n, g, device)
            expected = torchvision.ops.nms(boxes, scores, IOU_THRESHOLD)
            base = None
            for backend in ordered:
                if progress:
                    progress(f"nms {n} boxes on {device}: {backend}")
                with use_backend(backend):
                    from detcli.ops.nms import nms

                    got = nms(boxes, scores, IOU_THRESHOLD)
                    if not torch.equal(got.cpu(), expected.cpu()):
                        raise KernelError(f"benchmark: nms backend '{backend}' on {device} differs from torchvision for {n} boxes")
                    t = _median_time(lambda: nms(boxes, scores, IOU_THRESHOLD), repeats, device)  # noqa: B023 (called at once)
                base = t if base is None else base
                rows.append(BenchmarkRow("nms", f"{n} boxes", backend, device, t, base / t, repeats))
        channels, num_rois = roi_align_size
        features = torch.randn(2, channels, 64, 64, generator=g).to(device)  # (2, C, 64, 64): stride 4 of 256 px
        rois = random_rois(num_rois, 2, 256, g, device)  # (K, 5)
        expected_ra = torchvision.ops.roi_align(features, rois, (7, 7), 0.25, 2, True)
        base = None
        for backend in [b for b in ordered if b != "torch"]:  # "torch" uses torchvision's RoIAlign
            if progress:
                progress(f"roi_align {channels}ch x {num_rois} rois on {device}: {backend}")
            with use_backend(backend):
                from detcli.ops.roi_align import roi_align

                got_ra = roi_align(features, rois, (7, 7), 0.25, 2, True)
                if not torch.allclose(got_ra, expected_ra, atol=1e-5, rtol=1e-5):
                    raise KernelError(f"benchmark: roi_align backend '{backend}' on {device} differs from torchvision")
                t = _median_time(lambda: roi_align(features, rois, (7, 7), 0.25, 2, True), repeats, device)  # noqa: B023
            base = t if base is None else base
            rows.append(BenchmarkRow("roi_align", f"{channels}ch x {num_rois} rois", backend, device, t, base / t, repeats))
    return rows
