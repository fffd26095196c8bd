"""kernels/nms.cu, run on the CPU through kernels/testing (every block and thread), equals torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from kernel_cases import nms_cases

from detcli.ops.cupy_backend import float_threshold

CASES = nms_cases()


def run_kernel(lib, boxes: torch.Tensor, scores: torch.Tensor, thr: float, gather_threads: int = 256) -> torch.Tensor:
    order = torch.sort(scores, descending=True, stable=True).indices  # what the CuPy backend does
    kept = lib.nms(boxes[order].numpy(), order.numpy(), float_threshold(thr), gather_threads=gather_threads)
    return torch.from_numpy(kept)


@pytest.mark.parametrize(("name", "boxes", "scores", "thr"), CASES, ids=[c[0] for c in CASES])
def test_kernel_matches_torchvision(cpu_kernels, name: str, boxes, scores, thr: float) -> None:
    expected = torchvision.ops.nms(boxes, scores, thr)
    got = run_kernel(cpu_kernels, boxes, scores, thr)
    assert torch.equal(got, expected), name


@pytest.mark.parametrize("gather_threads", [1, 3, 64, 1024])
def test_gather_is_independent_of_block_size(cpu_kernels, gather_threads: int) -> None:
    # more 64-box blocks (32) than threads, and more threads than blocks
    boxes, scores = torch.rand(2000, 2) * 100, torch.rand(2000)
    boxes = torch.cat([boxes, boxes + 20], dim=1)
    expected = torchvision.ops.nms(boxes, scores, 0.4)
    assert torch.equal(run_kernel(cpu_kernels, boxes, scores, 0.4, gather_threads), expected)


def test_empty_input_writes_zero_count(cpu_kernels) -> None:
    kept = cpu_kernels.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0.5)
    assert kept.shape == (0,)


def test_spec_example(cpu_kernels) -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert run_kernel(cpu_kernels, boxes, scores, 0.5).tolist() == [0, 2]
    assert run_kernel(cpu_kernels, boxes, scores, 0.7).tolist() == [0, 1, 2]


def test_tied_scores_keep_lower_index_first(cpu_kernels) -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert run_kernel(cpu_kernels, boxes, scores, 0.5).tolist() == [0, 2]


@pytest.mark.parametrize(("thr", "expected"), [(0.5, [0, 2]), (0.7, [0, 1, 2]), (float(np.float32(0.7)), [0, 1, 2])])
def test_threshold_rounding_matches_double_comparison(thr: float, expected: list[int]) -> None:
    # float_threshold(t) is the largest float32 <= t
    f = float_threshold(thr)
    assert f <= thr and np.float32(f) == f
    assert np.nextafter(np.float32(f), np.float32(np.inf)) > thr


@pytest.mark.parametrize(("num_kept", "n"), [(0, 10), (1, 1), (63, 65), (130, 200)])
def test_suppressed_by_flags_exactly_the_overlapping_boxes(cpu_kernels, num_kept: int, n: int) -> None:
    from kernel_cases import random_boxes

    kept, _ = random_boxes(num_kept, seed=11)
    boxes, _ = random_boxes(n, seed=12)
    flags = torch.full((n,), 7, dtype=torch.int32)
    flags[::2] = 0  # the kernel only ever writes 1: untouched entries keep their value
    expected = flags.clone()
    if num_kept:
        iou = torchvision.ops.box_iou(kept.double(), boxes.double())  # (num_kept, n)
        expected[(iou > 0.3).any(0)] = 1
    cpu_kernels.launch("nms_suppressed_by", ((n + 63) // 64,), (64,),
                       (kept.contiguous(), np.int32(num_kept), boxes.contiguous(), np.int32(n),
                        np.float32(float_threshold(0.3)), flags))
    assert torch.equal(flags, expected)
