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


def test_batched_nms_per_class_split_keeps_tie_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tied scores in different categories come out lower index first, as from one offset call
    (the split used to order ties by category size)."""
    import importlib
    nms_module = importlib.import_module("detcli.ops.nms")
    g = torch.Generator().manual_seed(4)
    xy = torch.rand(600, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(600, 2, generator=g) * 40 + 1], dim=1)
    scores = torch.randint(0, 6, (600,), generator=g).float() / 5  # 6 distinct values: ties everywhere
    idxs = (torch.arange(600) % 9 == 0).long() + (torch.arange(600) % 3 == 0).long()  # 3 categories, unequal sizes
    offset_call = batched_nms(boxes, scores, idxs, 0.5)
    monkeypatch.setattr(nms_module, "PER_CLASS_NMS_MIN_BOXES", 1)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), offset_call)
    assert torch.equal(offset_call, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize(("n", "categories", "split"), [(3960, 5, True), (1999, 5, False), (2500, 80, False),
                                                        (4000, 80, True)])
def test_batched_nms_splits_few_large_categories(monkeypatch: pytest.MonkeyPatch, n: int, categories: int,
                                                  split: bool) -> None:
    """The RPN's 5 levels of ~800 proposals split (greedy NMS over all of them at once costs 3-4x);
    80 classes of ~30 boxes stay one offset call below PER_CLASS_NMS_MIN_BOXES. Same result either way."""
    import importlib
    nms_module = importlib.import_module("detcli.ops.nms")
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(n, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 1], dim=1)
    scores, idxs = torch.rand(n, generator=g), torch.randint(0, categories, (n,), generator=g)
    calls: list[int] = []
    real = nms_module._per_class_nms
    monkeypatch.setattr(nms_module, "_per_class_nms", lambda *a: calls.append(1) or real(*a))
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.6), torchvision.ops.batched_nms(boxes, scores, idxs, 0.6))
    assert calls == ([1] if split else [])

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


def _clustered(n: int, objects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like candidates: ``n`` jittered copies of ``objects`` boxes."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(objects, 2, generator=g) * 600
    base = torch.cat([base, base + 30 + torch.rand(objects, 2, generator=g) * 150], dim=1)
    boxes = base[torch.randint(0, objects, (n,), generator=g)] + torch.randn(n, 4, generator=g) * 6
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes, torch.rand(n, generator=g)


def test_reference_pair_cap_raises_before_building_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.ops.reference as reference

    boxes, scores = _clustered(400, 4, seed=1)  # ~100 copies per object: tens of pairs per box
    built: list[int] = []
    real = torch.repeat_interleave
    monkeypatch.setattr(torch, "repeat_interleave", lambda *a, **k: built.append(1) or real(*a, **k))
    with pytest.raises(reference.TooDenseError, match=r"candidate pairs for 400 boxes \(limit 7980\)") as info:
        nms_sparse(boxes, scores, 0.5, max_pair_share=0.1)
    assert built == []  # counted, never materialised
    monkeypatch.setattr(torch, "repeat_interleave", real)
    pairs = info.value.pairs
    assert str(info.value).startswith(f"{pairs} candidate pairs") and pairs > 7980
    # just above the count it runs, and the result is torchvision's; just below it declines
    all_pairs = 400 * 399 / 2
    assert torch.equal(nms_sparse(boxes, scores, 0.5, max_pair_share=(pairs + 0.5) / all_pairs),
                       torchvision.ops.nms(boxes, scores, 0.5))
    with pytest.raises(reference.TooDenseError):
        nms_sparse(boxes, scores, 0.5, max_pair_share=(pairs - 0.5) / all_pairs)


def test_auto_backend_sends_overlapping_boxes_to_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above TORCH_NMS_MIN_BOXES, auto runs the plain-PyTorch NMS only on boxes that overlap little
    (class-offset batches); clustered candidates of one class go to torchvision. Same results."""
    import detcli.ops.dispatch as dispatch
    import detcli.ops.reference as reference

    calls: list[str] = []
    real_sparse, real_tv = reference.nms_sparse, torchvision.ops.nms
    monkeypatch.setattr(reference, "nms_sparse", lambda *a, **k: calls.append("sparse") or real_sparse(*a, **k))
    monkeypatch.setattr(torchvision.ops, "nms", lambda *a, **k: calls.append("tv") or real_tv(*a, **k))
    n = dispatch.TORCH_NMS_MIN_BOXES
    dense, dense_scores = _clustered(n, 10, seed=2)
    sparse_boxes = dense + torch.arange(n).remainder(80).float()[:, None] * 1000  # 80 classes offset apart
    for boxes, scores, route in ((dense, dense_scores, ["sparse", "tv"]), (sparse_boxes, dense_scores, ["sparse"])):
        calls.clear()
        with use_backend("auto"):
            kept = dispatch.backend_for(boxes, num_boxes=n).nms(boxes, scores, 0.5)
        assert calls == route  # the sparse path declined the dense set before any pair was built
        assert torch.equal(kept, real_tv(boxes, scores, 0.5))
    calls.clear()
    with use_backend("torch"):  # forced: no cap
        assert torch.equal(dispatch.backend_for(dense, num_boxes=n).nms(dense, dense_scores, 0.5),
                           real_tv(dense, dense_scores, 0.5))
    assert calls == ["sparse"]
