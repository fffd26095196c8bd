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


# Chunked NMS (inputs above NMS_CHUNK_BOXES): same keep list as torchvision, bitmask bounded by the chunk.
# small chunks (many launches) only on the small inputs, to keep the CPU run short
CHUNK_CASES = [
    (chunk, *c)
    for c in nms_cases()
    if c[1].shape[0] in (0, 1, 65, 2000) or not c[0].startswith("random")
    for chunk in ((1, 7, 64, 100) if c[1].shape[0] <= 150 else (64, 100))
]


def _mask_rows(calls, function="nms_mask"):
    return [grid for name, grid, _ in calls if name == function]


@pytest.mark.parametrize(
    ("chunk", "name", "boxes", "scores", "thr"), CHUNK_CASES, ids=[f"{c[1]}-chunk{c[0]}" for c in CHUNK_CASES]
)
def test_chunked_nms_launch_path_equals_torchvision(cpu_cupy, monkeypatch, chunk, name, boxes, scores, thr) -> None:
    monkeypatch.setattr(cupy_backend, "NMS_CHUNK_BOXES", chunk)
    got = cupy_backend.nms(boxes, scores, thr)
    assert torch.equal(got, torchvision.ops.nms(boxes, scores, thr)), name
    blocks = (chunk + 63) // 64
    assert all(grid[0] <= blocks and grid[1] <= blocks for grid in _mask_rows(cpu_cupy)), "bitmask above the chunk"
    if boxes.shape[0] > chunk:
        assert any(name == "nms_suppressed_by" for name, _, _ in cpu_cupy)


def test_chunked_nms_all_suppressed_after_the_first_chunk(cpu_cupy, monkeypatch) -> None:
    # 500 copies of one box: chunk 1 keeps box 0, every later chunk is suppressed whole (no bitmask launch)
    monkeypatch.setattr(cupy_backend, "NMS_CHUNK_BOXES", 100)
    boxes = torch.tensor([[10.0, 10, 20, 20]]).repeat(500, 1)
    scores = torch.linspace(0.1, 0.9, 500)
    assert cupy_backend.nms(boxes, scores, 0.5).tolist() == [499]
    names = [name for name, _, _ in cpu_cupy]
    assert names.count("nms_mask") == 1
    assert names.count("nms_suppressed_by") == 4
    assert cpu_cupy[names.index("nms_suppressed_by")][1:] == ((2,), (64,))


def test_chunked_nms_ties_across_chunk_borders(cpu_cupy, monkeypatch) -> None:
    # equal scores: the stable order (lower index first) decides across chunk borders too
    monkeypatch.setattr(cupy_backend, "NMS_CHUNK_BOXES", 3)
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 11, 11], [0, 0, 10, 10], [21, 21, 31, 31],
                          [50, 50, 60, 60], [0, 0, 10, 5]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9])
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert expected.tolist() == [6, 0, 1, 5]
    assert torch.equal(cupy_backend.nms(boxes, scores, 0.5), expected)


def test_nms_mask_bytes() -> None:
    assert cupy_backend.nms_mask_bytes(200_000, chunk_boxes=200_000) == 200_000 * 3125 * 8  # 5.0 GB unchunked
    assert cupy_backend.nms_mask_bytes(200_000) == 16384 * 256 * 8 == 32 * 2**20
    assert cupy_backend.nms_mask_bytes(100) == 100 * 2 * 8
