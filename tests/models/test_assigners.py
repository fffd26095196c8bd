import pytest
import torch

from detcli.models.assigners import IGNORE, NEGATIVE, AssignResult, MaxIoUAssigner


def test_doc_example():
    res = MaxIoUAssigner(0.5, 0.5).assign(torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20]]),
                                          torch.tensor([[0.0, 0, 10, 9]]), gt_labels=torch.tensor([3]))
    assert res.gt_inds.tolist() == [1, 0]
    assert res.labels.tolist() == [3, -1]
    assert res.max_overlaps[0].item() == pytest.approx(0.9)
    assert res.num_gts == 1


def test_no_gt_all_negative():
    res = MaxIoUAssigner(0.5, 0.4).assign(torch.tensor([[0.0, 0, 10, 10], [5, 5, 9, 9]]), torch.zeros(0, 4))
    assert res.gt_inds.tolist() == [NEGATIVE, NEGATIVE]


def test_no_priors():
    res = MaxIoUAssigner(0.5, 0.4).assign(torch.zeros(0, 4), torch.tensor([[0.0, 0, 10, 10]]))
    assert res.gt_inds.shape == (0,)


def test_between_thresholds_ignored_and_low_quality():
    # IoUs with gt [0,0,10,10]: 1.0, 0.45 (between 0.4 and 0.5 -> ignore), 0.0 (negative)
    priors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 4.5], [20, 20, 30, 30]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    res = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.0).assign(priors, gt)
    assert res.gt_inds.tolist() == [1, IGNORE, NEGATIVE]
    # low quality: gt whose best IoU 0.45 < pos_iou_thr still gets its best prior
    res = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.3).assign(priors[1:], gt)
    assert res.gt_inds.tolist() == [1, NEGATIVE]
    res = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.3, match_low_quality=False).assign(priors[1:], gt)
    assert res.gt_inds.tolist() == [IGNORE, NEGATIVE]


def test_tie_at_threshold_is_positive():
    priors = torch.tensor([[0.0, 0, 10, 10]])
    gt = torch.tensor([[0.0, 0, 10, 5]])  # IoU exactly 0.5
    assert MaxIoUAssigner(0.5, 0.4, match_low_quality=False).assign(priors, gt).gt_inds.tolist() == [1]


def test_gt_max_assign_all_ties_and_later_gt_wins():
    priors = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    gt = torch.tensor([[5.0, 0, 25, 10], [5.0, 0, 25, 10]])  # both priors IoU 1/3 with both gts
    res = MaxIoUAssigner(0.5, 0.2, min_pos_iou=0.1).assign(priors, gt)
    assert res.gt_inds.tolist() == [2, 2]
    res = MaxIoUAssigner(0.5, 0.2, min_pos_iou=0.1, gt_max_assign_all=False).assign(priors, gt)
    assert res.gt_inds.tolist() == [2, IGNORE]


def test_ignore_boxes():
    priors = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    ignore = torch.tensor([[45.0, 45, 70, 70]])
    res = MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.5).assign(priors, gt, ignore)
    assert res.gt_inds.tolist() == [1, IGNORE, NEGATIVE]
    res = MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=-1).assign(priors, gt, ignore)
    assert res.gt_inds.tolist() == [1, NEGATIVE, NEGATIVE]


def test_neg_range_tuple():
    priors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 2], [40, 40, 50, 50]])  # IoU 1, 0.2, 0
    gt = torch.tensor([[0.0, 0, 10, 10]])
    res = MaxIoUAssigner(0.5, (0.1, 0.3), match_low_quality=False).assign(priors, gt)
    assert res.gt_inds.tolist() == [1, NEGATIVE, IGNORE]


def test_batch_equals_per_image_with_padding():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(200, 2, generator=g) * 80
    priors = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 30], 1)
    gts = [torch.tensor([[10.0, 10, 40, 40], [50, 20, 90, 70]]), torch.zeros(0, 4), torch.tensor([[0.0, 0, 30, 30]])]
    a = MaxIoUAssigner(0.5, 0.4)
    padded = torch.zeros(3, 2, 4)
    valid = torch.zeros(3, 2, dtype=torch.bool)
    for i, t in enumerate(gts):
        padded[i, : len(t)] = t
        valid[i, : len(t)] = True
    gt_inds, _ = a.assign_batch(priors, padded, valid)
    for i, t in enumerate(gts):
        assert torch.equal(gt_inds[i], a.assign(priors, t).gt_inds)


def test_prior_valid_excluded_are_ignored():
    priors = torch.tensor([[0.0, 0, 10, 10], [30, 30, 40, 40]])
    gt = torch.tensor([[[0.0, 0, 10, 10]], [[0.0, 0, 0, 0]]])
    valid = torch.tensor([[True], [False]])
    prior_valid = torch.tensor([[True, False], [True, False]])
    gt_inds, _ = MaxIoUAssigner(0.5, 0.4).assign_batch(priors, gt, valid, prior_valid=prior_valid)
    assert gt_inds.tolist() == [[1, IGNORE], [NEGATIVE, IGNORE]]


def test_assign_result_add_gt():
    res = AssignResult(9, torch.tensor([0, 1, 0, 3]), torch.rand(4), torch.tensor([-1, 2, -1, 0]))
    res.add_gt_(torch.tensor([4, 5, 6]))
    assert res.gt_inds.shape == (7,) and res.max_overlaps.shape == (7,) and res.labels.shape == (7,)
    assert res.gt_inds[:3].tolist() == [1, 2, 3] and res.labels[:3].tolist() == [4, 5, 6]
    assert res.num_preds == 7


def test_bad_neg_range():
    with pytest.raises(ValueError, match="lo, hi"):
        MaxIoUAssigner(0.5, (0.1, 0.2, 0.3))


def test_assign_batch_takes_level_counts_and_predictions_without_changing_iou_assignment():
    """The BatchAssigner interface: per-level prior counts (and predictions) are accepted; IoU
    assignment gives the same codes with them; counts that do not sum to N are refused."""
    priors = torch.tensor([[0.0, 0, 10, 10], [30, 30, 40, 40], [0, 0, 20, 20]])
    gt = torch.tensor([[[0.0, 0, 10, 10]]])
    valid = torch.tensor([[True]])
    a = MaxIoUAssigner(0.5, 0.4)
    assert a.needs_predictions is False
    plain, plain_iou = a.assign_batch(priors, gt, valid)
    got, got_iou = a.assign_batch(priors, gt, valid, num_level_priors=[2, 1], pred_bboxes=priors[None],
                                  pred_scores=torch.zeros(1, 3, 2))
    assert plain.tolist() == got.tolist() == [[1, NEGATIVE, NEGATIVE]]
    assert torch.equal(plain_iou, got_iou) and got_iou[0].tolist() == [1.0, 0.0, 0.25]
    with pytest.raises(ValueError, match=r"num_level_priors \[2, 2\] sum to 4, but there are 3 priors"):
        a.assign_batch(priors, gt, valid, num_level_priors=[2, 2])
