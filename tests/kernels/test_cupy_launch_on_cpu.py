"""The CuPy backend's launch code (buffers, argument order and types, grid and block), run against the
real kernels on the CPU: CuPy's launcher is replaced by kernels/testing, everything else is the
production code of detcli.ops.cupy_backend."""

from __future__ import annotations

import pytest
import torch
import torchvision
from kernel_cases import nms_cases, roi_align_cases

from detcli.ops import cupy_backend


class _FakeLaunch:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> _FakeLaunch:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def array(self, t: torch.Tensor) -> torch.Tensor:
        assert t.is_contiguous()
        return t  # the harness reads data_ptr(): shared memory, no copy, like DLPack


@pytest.fixture
def cpu_cupy(cpu_kernels, monkeypatch: pytest.MonkeyPatch):
    launched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def kernel(name: str, function: str, device: torch.device):
        def call(grid, block, args):
            launched.append((function, tuple(grid), tuple(block)))
            cpu_kernels.launch(function, tuple(grid), tuple(block), tuple(args))

        return call

    monkeypatch.setattr(cupy_backend, "_check", lambda t, what: None)
    monkeypatch.setattr(cupy_backend, "_kernel", kernel)
    monkeypatch.setattr(cupy_backend, "_Launch", _FakeLaunch)
    return launched


NMS_CASES = [c for c in nms_cases() if c[1].shape[0] in (0, 65, 2000) or not c[0].startswith("random")]


@pytest.mark.parametrize(("name", "boxes", "scores", "thr"), NMS_CASES, ids=[c[0] for c in NMS_CASES])
def test_nms_launch_path(cpu_cupy, name: str, boxes, scores, thr: float) -> None:
    got = cupy_backend.nms(boxes, scores, thr)
    assert torch.equal(got, torchvision.ops.nms(boxes, scores, thr)), name
    if boxes.shape[0]:
        blocks = (boxes.shape[0] + 63) // 64
        assert cpu_cupy == [("nms_mask", (blocks, blocks), (64,)), ("nms_gather_keep", (1,), (256,))]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("case", roi_align_cases()[:3], ids=[c[0] for c in roi_align_cases()[:3]])
def test_roi_align_autograd_function_launch_path(cpu_cupy, case, aligned: bool) -> None:
    _, feats, rois, out_size, scale = case
    x = feats.detach().clone().requires_grad_(True)
    out = cupy_backend.RoIAlignFunction.apply(x, rois, out_size, scale, 0, aligned)
    x_ref = feats.detach().clone().requires_grad_(True)
    expected = torchvision.ops.roi_align(x_ref, rois, out_size, scale, 0, aligned)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    assert [c[0] for c in cpu_cupy] == ["roi_align_forward_f32", "roi_align_backward_f32"]


def test_roi_align_float16_launch_path(cpu_cupy) -> None:
    _, feats, rois, out_size, scale = roi_align_cases()[2]
    x = feats.detach().half().requires_grad_(True)
    out = cupy_backend.RoIAlignFunction.apply(x, rois, out_size, scale, 2, True)
    assert out.dtype == torch.float16
    expected = torchvision.ops.roi_align(feats.half().float(), rois, out_size, scale, 2, True).half()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float16
    assert [c[0] for c in cpu_cupy] == ["roi_align_forward_f16", "roi_align_backward_f16"]
