"""detcli.ops roi_align / RoIAlign on every backend: torchvision's values and gradients."""

from __future__ import annotations

import pytest
import torch
import torchvision
from ops_helpers import cpu_and_cuda
from kernel_cases import roi_align_cases

from detcli.ops import RoIAlign, roi_align, use_backend

CASES = roi_align_cases()


def backends_for(device: str) -> list[str]:
    return ["auto", "torchvision"] + (["cupy"] if device == "cuda" else [])


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_and_backward_match_torchvision(device: str, aligned: bool, sampling_ratio: int, case) -> None:
    _, feats, rois, out_size, scale = case
    x_ref = feats.clone().requires_grad_(True)
    expected = torchvision.ops.roi_align(x_ref, rois, out_size, scale, sampling_ratio, aligned)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2))
    expected.backward(grad)
    for backend in backends_for(device):
        x = feats.detach().clone().to(device).requires_grad_(True)
        with use_backend(backend):
            out = roi_align(x, rois.to(device), out_size, scale, sampling_ratio, aligned)
        out.backward(grad.to(device))
        torch.testing.assert_close(out.detach().cpu(), expected.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x.grad.cpu(), x_ref.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_float16(device: str) -> None:
    _, feats, rois, out_size, scale = CASES[2]
    x = feats.detach().half().to(device).requires_grad_(True)
    out = roi_align(x, rois.to(device), out_size, scale, 2, True)
    assert out.dtype == torch.float16
    if device == "cpu":
        # torchvision's CPU kernel computes in float16 arithmetic (RoIs cast to float16 as well)
        expected = torchvision.ops.roi_align(feats.half(), rois.half(), out_size, scale, 2, True)
        torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)
    else:
        # the CuPy kernels accumulate in float32: one float16 rounding of the float32 result
        expected = torchvision.ops.roi_align(feats.half().float(), rois, out_size, scale, 2, True)
        torch.testing.assert_close(out.detach().float().cpu(), expected, rtol=1e-3, atol=1e-3)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float16 and x.grad.shape == x.shape


def test_int_output_size_and_empty_rois() -> None:
    feats = torch.randn(1, 4, 8, 8)
    assert roi_align(feats, torch.zeros(0, 5), 3).shape == (0, 4, 3, 3)
    assert roi_align(feats, torch.tensor([[0, 1.0, 1, 5, 5]]), 2).shape == (1, 4, 2, 2)


def test_bad_shapes_name_the_offender() -> None:
    with pytest.raises(ValueError, match=r"rois must have shape \(K, 5\).*got \(2, 4\)"):
        roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(2, 4), 2)
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, H, W\), got \(4, 4\)"):
        roi_align(torch.zeros(4, 4), torch.zeros(1, 5), 2)


def test_gradcheck_through_the_public_function() -> None:
    feats = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1.2, 4.3, 5.1], [0, -1.0, 2.0, 3.0, 7.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: roi_align(x, rois, (2, 3), 1.0, 2, True), (feats,))


def test_module_repr_and_forward() -> None:
    layer = RoIAlign(output_size=7, spatial_scale=0.25, sampling_ratio=0)
    assert repr(layer) == "RoIAlign(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)"
    feats = torch.randn(2, 3, 16, 16)
    rois = torch.tensor([[1, 4.0, 4.0, 40.0, 30.0]])
    torch.testing.assert_close(layer(feats, rois), torchvision.ops.roi_align(feats, rois, 7, 0.25, 0, True))


@pytest.mark.parametrize("num_rois", [0, 1, 63, 64, 65, 301])
def test_cpu_thread_split_is_exact(num_rois: int) -> None:
    """The auto/torch CPU path deals RoIs out to threads: same values and gradients as one call,
    in grad mode, under inference_mode, and on channels-last maps (gradients up to summation order)."""
    from detcli.ops.dispatch import ROI_ALIGN_SPLIT_MIN_ROIS

    assert 2 * ROI_ALIGN_SPLIT_MIN_ROIS <= 64  # 64 and more RoIs really are split here
    g = torch.Generator().manual_seed(num_rois)
    feats = torch.randn(2, 8, 24, 30, generator=g)
    xy = torch.rand(num_rois, 2, generator=g) * 100
    wh = torch.rand(num_rois, 2, generator=g) * 60 + 1
    rois = torch.cat([torch.randint(0, 2, (num_rois, 1), generator=g).float(), xy, xy + wh], 1)
    x_ref = feats.clone().requires_grad_(True)
    expected = torchvision.ops.roi_align(x_ref, rois, (7, 7), 0.25, 0, True)
    grad = torch.randn(expected.shape, generator=g)
    expected.backward(grad)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for backend in ("auto", "torch"):
            x = feats.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
            with use_backend(backend):
                out = roi_align(x, rois, 7, 0.25, 0, True)
                if num_rois:  # no RoI: a constant empty tensor
                    out.backward(grad)
                with torch.inference_mode():
                    inferred = roi_align(feats, rois, 7, 0.25, 0, True)
            assert torch.equal(out.detach(), expected.detach())
            assert torch.equal(inferred, expected.detach())
            if num_rois:
                torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)  # summation order
    finally:
        torch.set_num_threads(previous)
