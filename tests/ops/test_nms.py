"""detcli.ops NMS entry points on every backend: identical to torchvision.ops.nms."""

from __future__ import annotations

import pytest
import torch
import torchvision
from kernel_cases import nms_cases

from detcli.ops import batched_nms, multiclass_nms, nms, use_backend
from detcli.ops.reference import nms_sparse

from ops_helpers import cpu_and_cuda

CASES = nms_cases()
IDS = [c[0] for c in CASES]


def backends_for(device: str) -> list[str]:
    return ["auto", "torchvision", "torch"] + (["cupy"] if device == "cuda" else [])


@pytest.mark.parametrize("device", cpu_and_cuda())
@pytest.mark.parametrize(("name", "boxes", "scores", "thr"), CASES, ids=IDS)
def test_every_backend_matches_torchvision(device: str, name: str, boxes, scores, thr: float) -> None:
    boxes, scores = boxes.to(device), scores.to(device)
    expected = torchvision.ops.nms(boxes.cpu(), scores.cpu(), thr)
    for backend in backends_for(device):
        with use_backend(backend):
            got = nms(boxes, scores, thr)
        assert got.dtype == torch.int64 and got.device.type == device
        assert torch.equal(got.cpu(), expected), f"{backend}: {name}"


@pytest.mark.parametrize(("name", "boxes", "scores", "thr"), CASES, ids=IDS)
def test_plain_pytorch_reference_matches_torchvision(name: str, boxes, scores, thr: float) -> None:
    assert torch.equal(nms_sparse(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr)), name


@pytest.mark.parametrize("dtype", [torch.float64])
def test_reference_other_dtypes(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(500, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 30], dim=1).to(dtype)
    scores = torch.rand(500, generator=g).to(dtype)
    assert torch.equal(nms_sparse(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_reference_degenerate_heights_and_huge_offsets() -> None:
    flat = torch.tensor([[0.0, 5, 10, 5], [1, 5, 9, 5], [0, 5, 10, 5]])  # zero height: nothing suppresses
    assert nms_sparse(flat, torch.tensor([0.3, 0.2, 0.1]), 0.0).tolist() == [0, 1, 2]
    g = torch.Generator().manual_seed(8)
    xy = torch.rand(400, 2, generator=g) * 10
    boxes = torch.cat([xy, xy + 0.001], dim=1) + torch.arange(400.0)[:, None] * 1e6  # (400, 4) far apart
    scores = torch.rand(400, generator=g)
    assert torch.equal(nms_sparse(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_reference_small_pair_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.ops.reference as reference

    monkeypatch.setattr(reference, "PAIR_CHUNK", 97)
    g = torch.Generator().manual_seed(6)
    xy = torch.rand(600, 2, generator=g) * 80
    boxes, scores = torch.cat([xy, xy + 12], dim=1), torch.rand(600, generator=g)
    assert torch.equal(nms_sparse(boxes, scores, 0.3), torchvision.ops.nms(boxes, scores, 0.3))


def test_reference_round_cap_raises_and_torch_backend_falls_back() -> None:
    from detcli.ops.dispatch import TorchBackend
    from detcli.ops.reference import NotConvergedError

    chain = torch.stack([torch.arange(40.0), torch.zeros(40), torch.arange(40.0) + 1.5, torch.ones(40)], dim=1)
    scores = torch.linspace(1, 0, 40)
    with pytest.raises(NotConvergedError):
        nms_sparse(chain, scores, 0.2, max_rounds=3)
    expected = torchvision.ops.nms(chain, scores, 0.2)
    assert torch.equal(TorchBackend(max_rounds=3).nms(chain, scores, 0.2), expected)


@pytest.mark.parametrize("thr", [-0.5, 0.5])
def test_torch_backend_negative_threshold_and_nan_go_to_torchvision(thr: float) -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [float("nan"), 0, 1, 1]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    with use_backend("torch"):
        assert torch.equal(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


def test_spec_example_thresholds() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]


def test_empty_and_single() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_bad_shapes_name_the_offender() -> None:
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got \(3, 5\)"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\).*got \(4,\)"):
        nms(torch.zeros(3, 4), torch.zeros(4), 0.5)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_batched_nms_never_suppresses_across_classes(device: str) -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    idxs = torch.tensor([0, 1, 0], device=device)
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1]
    assert batched_nms(boxes[:0], scores[:0], idxs[:0], 0.5).shape == (0,)


def test_batched_nms_large_matches_torchvision_on_auto() -> None:
    g = torch.Generator().manual_seed(9)
    xy = torch.rand(3000, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=g) * 40], dim=1)
    scores, idxs = torch.rand(3000, generator=g), torch.randint(0, 5, (3000,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))



def test_batched_nms_per_class_split_equals_one_offset_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """From PER_CLASS_NMS_MIN_BOXES boxes the CPU runs one NMS per class; the kept set and order do not change."""
    import importlib
    nms_module = importlib.import_module("detcli.ops.nms")
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(500, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 30 + 1], dim=1)
    scores, idxs = torch.rand(500, generator=g), torch.randint(0, 7, (500,), generator=g)
    offset_call = batched_nms(boxes, scores, idxs, 0.6)
    monkeypatch.setattr(nms_module, "PER_CLASS_NMS_MIN_BOXES", 1)
    split = batched_nms(boxes, scores, idxs, 0.6)
    assert torch.equal(split, offset_call)
    assert torch.equal(split, torchvision.ops.batched_nms(boxes, scores, idxs, 0.6))
    one = batched_nms(boxes[:1], scores[:1], idxs[:1], 0.6)
    assert one.tolist() == [0]

class TestMulticlassNMS:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])

    def scores(self) -> torch.Tensor:
        return torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.7, 0.0]])  # one class + background

    def test_spec_values(self) -> None:
        dets, labels = multiclass_nms(self.boxes, self.scores(), 0.05, {"type": "nms", "iou_threshold": 0.5})
        assert dets[:, 4].tolist() == pytest.approx([0.9, 0.7])
        assert dets[:, :4].tolist() == [[0, 0, 10, 10], [20, 20, 30, 30]]
        assert labels.tolist() == [0, 0]
        dets, _ = multiclass_nms(self.boxes, self.scores(), 0.05, {"type": "nms", "iou_threshold": 0.7})
        assert dets[:, 4].tolist() == pytest.approx([0.9, 0.8, 0.7])

    def test_score_threshold_is_strict_and_factors_apply_after(self) -> None:
        dets, labels, inds = multiclass_nms(
            self.boxes, self.scores(), 0.8, {"iou_threshold": 0.5}, score_factors=torch.tensor([0.5, 1.0, 1.0]),
            return_inds=True,
        )
        assert dets[:, 4].tolist() == pytest.approx([0.45])
        assert inds.tolist() == [0]

    def test_empty_and_max_num(self) -> None:
        dets, labels = multiclass_nms(self.boxes, self.scores(), 0.95, {"iou_threshold": 0.5})
        assert dets.shape == (0, 5) and labels.shape == (0,)
        dets, _ = multiclass_nms(self.boxes, self.scores(), 0.05, {"iou_threshold": 0.7}, max_num=2)
        assert dets.shape == (2, 5)
