"""detcli.ops roi_align / RoIAlign on every backend: torchvision's values and gradients."""

from __future__ import annotations

import pytest
import torch
import torchvision
from kernel_cases import roi_align_cases

from detcli.ops import RoIAlign, roi_align, use_backend

from ops_helpers import cpu_and_cuda

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


# ---- RoI validation at the op boundary (every backend, before any kernel) ----

import importlib  # noqa: E402

from detcli.errors import KernelError  # noqa: E402
from detcli.ops import dispatch  # noqa: E402
from detcli.ops.roi_align import MAX_SAMPLES_PER_BIN_SIDE  # noqa: E402

FEATS = torch.zeros(2, 3, 16, 16)  # (N=2, C, H, W)


def _rois(*bad_row: float) -> torch.Tensor:
    good = torch.tensor([[0.0, 1, 1, 8, 8], [1, 2, 2, 9, 9]])
    return torch.cat([good, torch.tensor([bad_row]), good])  # the bad RoI is row 2


BAD_ROIS = [
    ("index-too-large", (2.0, 1, 1, 8, 8),
     r"^roi_align: RoI 2 \(batch_index, x1, y1, x2, y2\) = \(2, 1, 1, 8, 8\) has batch index 2, but the input "
     r"holds 2 feature maps \(valid: integers 0\.\.1\)$"),
    ("index-negative", (-1.0, 1, 1, 8, 8), r"RoI 2 .* has batch index -1, but the input holds 2 feature maps"),
    ("index-fractional", (0.5, 1, 1, 8, 8), r"RoI 2 .* has batch index 0\.5, .*valid: integers 0\.\.1"),
    ("nan-coordinate", (0.0, float("nan"), 1, 8, 8),
     r"^roi_align: RoI 2 \(batch_index, x1, y1, x2, y2\) = \(0, nan, 1, 8, 8\) has a NaN or infinite value; "
     r"RoIs must be finite$"),
    ("inf-coordinate", (0.0, 1, 1, float("inf"), 8), r"RoI 2 .*\(0, 1, 1, inf, 8\) has a NaN or infinite value"),
    ("nan-index", (float("nan"), 1, 1, 8, 8), r"RoI 2 .*\(nan, 1, 1, 8, 8\) has a NaN or infinite value"),
    ("huge-adaptive", (0.0, 0, 0, 4e5, 8),
     r"^roi_align: RoI 2 .* needs 57143 adaptive samples per bin side at spatial_scale=1 and output 7x7, above the "
     r"limit of 512; clip the RoIs to the image or set sampling_ratio > 0$"),
]


@pytest.mark.parametrize("backend", ["auto", "torchvision", "torch", "cupy"])
@pytest.mark.parametrize(("name", "row", "message"), BAD_ROIS, ids=[c[0] for c in BAD_ROIS])
def test_bad_rois_are_refused_before_any_kernel(monkeypatch, backend: str, name: str, row, message: str) -> None:
    def no_kernel(*args, **kwargs):
        raise AssertionError("a backend was chosen for invalid RoIs")

    monkeypatch.setattr(dispatch, "backend_for", no_kernel)
    monkeypatch.setattr(importlib.import_module("detcli.ops.roi_align"), "backend_for", no_kernel)
    with use_backend(backend), pytest.raises(KernelError, match=message):
        roi_align(FEATS, _rois(*row), 7, 1.0, 0, True)


def test_bad_roi_message_counts_the_others() -> None:
    rois = torch.tensor([[0.0, 1, 1, 8, 8], [5, 1, 1, 8, 8], [3, 1, 1, 8, 8], [7, 1, 1, 8, 8]])
    with pytest.raises(KernelError, match=r"RoI 1 .* holds 2 feature maps \(valid: integers 0\.\.1\) \(2 more RoIs also invalid\)$"):
        RoIAlign(7)(FEATS, rois)


def test_adaptive_limit_edges() -> None:
    side = 7 * MAX_SAMPLES_PER_BIN_SIDE  # exactly the limit: accepted
    rois = torch.tensor([[0.0, 0, 0, side, 4], [1, 0, 0, 4, side]])
    assert roi_align(FEATS, rois, 7, 1.0, 0, True).shape == (2, 3, 7, 7)
    with pytest.raises(KernelError, match=r"RoI 0 .* needs 513 adaptive samples per bin side"):
        roi_align(FEATS, torch.tensor([[0.0, 0, 0, side + 1, 4]]), 7, 1.0, 0, True)
    # the same RoI at a coarser level (spatial_scale 1/32) or with a fixed sampling ratio is fine
    assert roi_align(FEATS, torch.tensor([[0.0, 0, 0, 4e5, 8]]), 7, 1 / 32, 2, True).shape == (1, 3, 7, 7)
    assert roi_align(FEATS, torch.tensor([[0.0, 0, 0, 4e5 / 64, 8]]), 7, 1 / 32, 0, True).shape == (1, 3, 7, 7)
    with pytest.raises(KernelError, match=r"^roi_align: sampling_ratio=513 is above the limit of 512 samples per bin side"):
        roi_align(FEATS, torch.tensor([[0.0, 0, 0, 4, 4]]), 7, 1.0, 513, True)
    with pytest.raises(KernelError, match=r"^roi_align: spatial_scale must be a positive finite number, got nan$"):
        roi_align(FEATS, torch.tensor([[0.0, 0, 0, 4, 4]]), 7, float("nan"), 0, True)


def test_valid_float64_and_integral_float_indices_pass() -> None:
    rois = torch.tensor([[1.0, 0, 0, 15, 15], [0.0, -3, -3, 20, 20]], dtype=torch.float64)
    out = roi_align(FEATS.double(), rois, 2, 1.0, 0, False)
    assert out.shape == (2, 3, 2, 2) and torch.isfinite(out).all()
