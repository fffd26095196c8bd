import math

import pytest
import torch
import torch.nn.functional as F

from detcli.models.losses import (
    CrossEntropyLoss,
    FocalLoss,
    GIoULoss,
    IoULoss,
    L1Loss,
    SmoothL1Loss,
    centerness_target,
    sigmoid_focal_loss,
    weight_reduce_loss,
    weighted_loss,
)


@weighted_loss
def _l1(pred, target):
    return (pred - target).abs()


def test_weighted_loss_doc_example():
    pred, target, weight = torch.tensor([0.0, 2, 3]), torch.tensor([1.0, 1, 1]), torch.tensor([1.0, 0, 1])
    assert _l1(pred, target).item() == pytest.approx(4 / 3, abs=1e-4)
    assert _l1(pred, target, weight).item() == pytest.approx(1.0)
    assert _l1(pred, target, reduction="none").tolist() == [1.0, 1.0, 2.0]
    assert _l1(pred, target, weight, avg_factor=2).item() == pytest.approx(1.5)


def test_sum_with_avg_factor_raises_and_bad_reduction():
    with pytest.raises(ValueError, match="avg_factor"):
        weight_reduce_loss(torch.ones(3), reduction="sum", avg_factor=2)
    with pytest.raises(ValueError, match="reduction"):
        L1Loss(reduction="avg")


def test_l1_loss_weight_override():
    loss = L1Loss(loss_weight=2.0)
    pred, target = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    assert loss(pred, target).item() == pytest.approx(2.0)
    assert loss(pred, target, reduction_override="sum").item() == pytest.approx(4.0)
    assert loss(pred, target, reduction_override="none").tolist() == [[2.0, 2.0]]


def test_smooth_l1():
    assert SmoothL1Loss(beta=1.0)(torch.tensor([0.0, 2.0]), torch.tensor([0.5, 0.0])).item() == pytest.approx(0.8125)


@pytest.mark.parametrize("mode, expected", [("log", 0.693147), ("linear", 0.5), ("square", 0.75)])
def test_iou_loss_modes(mode, expected):
    loss = IoULoss(mode=mode)(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 20]]))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_iou_loss_linear_flag_and_bad_mode():
    assert IoULoss(linear=True).mode == "linear"
    with pytest.raises(ValueError, match="mode"):
        IoULoss(mode="cube")


def test_giou_loss_value_and_zero_weight_keeps_grad():
    assert GIoULoss()(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 5, 15, 15]])).item() == pytest.approx(1.079365, abs=1e-5)
    pred = torch.tensor([[0.0, 0, 10, 10]], requires_grad=True)
    out = GIoULoss()(pred, torch.tensor([[5.0, 5, 15, 15]]), weight=torch.zeros(1))
    assert out.item() == 0.0 and out.requires_grad


def test_empty_box_losses():
    for loss in (L1Loss(), GIoULoss(), IoULoss()):
        pred = torch.zeros(0, 4, requires_grad=True)
        out = loss(pred, torch.zeros(0, 4), avg_factor=1.0)
        assert out.item() == 0.0
        out.backward()


@pytest.mark.parametrize("label, expected", [(0, 0.0433217), (1, 0.1299651)])
def test_focal_values(label, expected):
    # one class; label 1 == num_classes is background
    assert FocalLoss()(torch.zeros(1, 1), torch.tensor([label])).item() == pytest.approx(expected, abs=1e-6)


def _reference_focal(pred, labels, weight, gamma=2.0, alpha=0.25):
    onehot = F.one_hot(labels, pred.shape[1] + 1)[:, :-1].float()
    p = pred.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    w = (alpha * onehot + (1 - alpha) * (1 - onehot)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(pred, onehot, reduction="none") * w
    if weight is not None:
        loss = loss * weight[:, None]
    return loss


@pytest.mark.parametrize("use_weight", [False, True])
def test_fused_focal_matches_reference_value_and_grad(use_weight):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 7, generator=g) * 3).requires_grad_()
    labels = torch.randint(0, 8, (64,), generator=g)  # 7 = background
    weight = torch.rand(64, generator=g) if use_weight else None
    out = FocalLoss()(logits, labels, weight, avg_factor=5.0)
    ref_logits = logits.detach().clone().requires_grad_()
    ref = _reference_focal(ref_logits, labels, weight).sum() / 5.0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-4, atol=1e-6)


def test_focal_none_and_mean_and_all_background():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 3, 2, 3])
    none = FocalLoss(reduction="none")(logits, labels)
    torch.testing.assert_close(none, _reference_focal(logits, labels, None))
    torch.testing.assert_close(FocalLoss()(logits, labels), none.mean())
    bg = FocalLoss(reduction="sum")(logits, torch.tensor([3, 3, 3, 3]))
    torch.testing.assert_close(bg, _reference_focal(logits, torch.tensor([3, 3, 3, 3]), None).sum())


def test_focal_unsupported_options():
    with pytest.raises(ValueError, match="use_sigmoid"):
        FocalLoss(use_sigmoid=False)


def test_cross_entropy():
    assert CrossEntropyLoss()(torch.zeros(1, 3), torch.tensor([2])).item() == pytest.approx(math.log(3), abs=1e-6)
    bce = CrossEntropyLoss(use_sigmoid=True)(torch.zeros(2), torch.tensor([1.0, 0.0]), avg_factor=1.0)
    assert bce.item() == pytest.approx(2 * math.log(2), abs=1e-6)
    ign = CrossEntropyLoss(ignore_index=-1, avg_non_ignore=True)(torch.zeros(2, 3), torch.tensor([0, -1]))
    assert ign.item() == pytest.approx(math.log(3), abs=1e-6)
    with pytest.raises(ValueError, match="use_mask"):
        CrossEntropyLoss(use_sigmoid=True, use_mask=True)


def test_cross_entropy_use_mask_picks_the_label_channel():
    pred = torch.zeros(2, 3, 2, 2)
    pred[0, 1] = 20.0  # RoI 0, label 1: confident foreground
    pred[1, 2] = -20.0  # RoI 1, label 2: confident background
    target = torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])
    loss = CrossEntropyLoss(use_mask=True, loss_weight=2.0)(pred, target, torch.tensor([1, 2]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # the wrong channels (logit 0) cost ln 2 per element, averaged over K * H * W
    wrong = CrossEntropyLoss(use_mask=True)(pred, target, torch.tensor([0, 0]))
    assert wrong.item() == pytest.approx(math.log(2), abs=1e-6)
    half = CrossEntropyLoss(use_mask=True)(pred, target, torch.tensor([1, 0]))
    assert half.item() == pytest.approx(math.log(2) / 2, abs=1e-6)


def test_cross_entropy_use_mask_empty_keeps_the_graph():
    pred = torch.zeros(0, 3, 28, 28, requires_grad=True)
    loss = CrossEntropyLoss(use_mask=True)(pred, torch.zeros(0, 28, 28), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape


@pytest.mark.parametrize("dist, expected", [((10, 10, 10, 10), 1.0), ((5, 10, 15, 10), 0.57735), ((2, 4, 8, 16), 0.25)])
def test_centerness_target(dist, expected):
    assert centerness_target(torch.tensor([dist], dtype=torch.float32)).item() == pytest.approx(expected, abs=1e-5)
    assert centerness_target(torch.zeros(0, 4)).shape == (0,)


def test_sigmoid_focal_onehot_target():
    logits = torch.randn(3, 2)
    onehot = torch.tensor([[1.0, 0], [0, 0], [0, 1]])
    a = sigmoid_focal_loss(logits, onehot, reduction="sum")
    b = sigmoid_focal_loss(logits, torch.tensor([0, 2, 1]), reduction="sum")
    torch.testing.assert_close(a, b)
