"""kernels/roi_align.cu, run on the CPU through kernels/testing, equals torchvision (forward, backward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from kernel_cases import roi_align_cases

CASES = roi_align_cases()
PARAMS = [(c, aligned, sr) for c in CASES for aligned in (True, False) for sr in (0, 1, 2)]
IDS = [f"{c[0]}-aligned{int(a)}-sr{sr}" for c, a, sr in PARAMS]


@pytest.mark.parametrize(("case", "aligned", "sampling_ratio"), PARAMS, ids=IDS)
def test_forward_float32_is_bit_identical(cpu_kernels, case, aligned: bool, sampling_ratio: int) -> None:
    _, feats, rois, out_size, scale = case
    expected = torchvision.ops.roi_align(feats, rois, out_size, scale, sampling_ratio, aligned).numpy()
    got = cpu_kernels.roi_align_forward(feats.numpy(), rois.numpy(), out_size, scale, sampling_ratio, aligned)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("case", "aligned", "sampling_ratio"), PARAMS, ids=IDS)
def test_backward_matches_torchvision_autograd(cpu_kernels, case, aligned: bool, sampling_ratio: int) -> None:
    _, feats, rois, out_size, scale = case
    x = feats.clone().requires_grad_(True)
    out = torchvision.ops.roi_align(x, rois, out_size, scale, sampling_ratio, aligned)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(11))
    out.backward(grad_out)
    got = cpu_kernels.roi_align_backward(grad_out.numpy(), rois.numpy(), tuple(feats.shape), scale, sampling_ratio, aligned)
    np.testing.assert_allclose(got, x.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aligned", [True, False])
def test_forward_float16_rounds_the_float32_result(cpu_kernels, aligned: bool) -> None:
    _, feats, rois, out_size, scale = CASES[2]
    half = feats.half()
    expected = torchvision.ops.roi_align(half.float(), rois, out_size, scale, 0, aligned).half().numpy()
    got = cpu_kernels.roi_align_forward(half.numpy(), rois.numpy(), out_size, scale, 0, aligned)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, expected)  # float accumulation, one rounding at the store


def test_backward_float16_grad_output(cpu_kernels) -> None:
    _, feats, rois, out_size, scale = CASES[0]
    grad = torch.randn(rois.shape[0], feats.shape[1], *out_size).half()
    got = cpu_kernels.roi_align_backward(grad.numpy(), rois.numpy(), tuple(feats.shape), scale, 2, True)
    x = feats.clone().requires_grad_(True)
    torchvision.ops.roi_align(x, rois, out_size, scale, 2, True).backward(grad.float())
    np.testing.assert_allclose(got, x.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_wholly_outside_roi_is_zero_and_gets_no_gradient(cpu_kernels) -> None:
    feats = torch.ones(1, 2, 8, 8)
    rois = torch.tensor([[0, 100.0, 100.0, 120.0, 120.0]])
    out = cpu_kernels.roi_align_forward(feats.numpy(), rois.numpy(), (2, 2), 1.0, 2, True)
    assert np.all(out == 0)
    grad = cpu_kernels.roi_align_backward(np.ones_like(out), rois.numpy(), (1, 2, 8, 8), 1.0, 2, True)
    assert np.all(grad == 0)


def test_constant_map_inside_gives_the_constant(cpu_kernels) -> None:
    feats = torch.full((1, 1, 10, 10), 3.0)
    rois = torch.tensor([[0, 2.0, 2.0, 6.0, 6.0]])
    out = cpu_kernels.roi_align_forward(feats.numpy(), rois.numpy(), (2, 2), 1.0, 0, True)
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), 3.0, np.float32))


@pytest.mark.parametrize(("grid", "block"), [(1, 1), (1, 7), (5, 32), (64, 256)])
def test_grid_stride_loop_covers_every_output_for_any_launch(cpu_kernels, grid: int, block: int) -> None:
    _, feats, rois, out_size, scale = CASES[2]
    expected = torchvision.ops.roi_align(feats, rois, out_size, scale, 2, True).numpy()
    got = cpu_kernels.roi_align_forward(feats.numpy(), rois.numpy(), out_size, scale, 2, True, grid=grid, block=block)
    np.testing.assert_array_equal(got, expected)


def test_empty_rois(cpu_kernels) -> None:
    out = cpu_kernels.roi_align_forward(np.zeros((1, 2, 4, 4), np.float32), np.zeros((0, 5), np.float32), (2, 2), 1.0, 0, True)
    assert out.shape == (0, 2, 2, 2)
