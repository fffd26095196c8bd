"""RandomSampler: counts, bounds, ignored candidates, GT as proposals, determinism."""

import pytest
import torch

from detcli.models.assigners import AssignResult
from detcli.models.samplers import RandomSampler


def test_counts_follow_num_and_pos_fraction():
    gt_inds = torch.tensor([[1, 2, 3, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0, 0]])
    pos, neg = RandomSampler(num=4, pos_fraction=0.5).sample_batch(gt_inds)
    assert pos.sum(1).tolist() == [2, 0]
    assert neg.sum(1).tolist() == [2, 4]  # no positives: the whole minibatch is negatives
    assert not (pos[0, 6] or neg[0, 6])  # ignored candidates are never drawn
    assert bool((gt_inds[pos] > 0).all()) and bool((gt_inds[neg] == 0).all())


def test_fewer_candidates_than_asked_and_neg_pos_ub():
    gt_inds = torch.tensor([[1, 0, 0, 0, 0, 0]])
    pos, neg = RandomSampler(num=512, pos_fraction=0.25).sample_batch(gt_inds)
    assert (int(pos.sum()), int(neg.sum())) == (1, 5)
    pos, neg = RandomSampler(num=512, pos_fraction=0.25, neg_pos_ub=2).sample_batch(gt_inds)
    assert (int(pos.sum()), int(neg.sum())) == (1, 2)
    # no positive: the cap counts one positive
    pos, neg = RandomSampler(num=512, pos_fraction=0.25, neg_pos_ub=3).sample_batch(torch.zeros(1, 10, dtype=torch.long))
    assert (int(pos.sum()), int(neg.sum())) == (0, 3)


def test_empty_and_seeded_draws():
    pos, neg = RandomSampler(4, 0.5).sample_batch(torch.zeros(2, 0, dtype=torch.long))
    assert pos.shape == (2, 0) and neg.shape == (2, 0)
    gt_inds = torch.tensor([[1] * 10 + [0] * 30])
    s = RandomSampler(num=8, pos_fraction=0.5)
    a = s.sample_batch(gt_inds, torch.Generator().manual_seed(3))
    b = s.sample_batch(gt_inds, torch.Generator().manual_seed(3))
    c = s.sample_batch(gt_inds, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))
    torch.manual_seed(0)
    d = s.sample_batch(gt_inds)
    torch.manual_seed(0)
    assert torch.equal(d[1], s.sample_batch(gt_inds)[1])  # the global RNG when no generator is given


def test_uniform_over_candidates():
    gt_inds = torch.tensor([[1, 1, 1, 1]])
    g = torch.Generator().manual_seed(0)
    counts = sum(RandomSampler(num=2, pos_fraction=0.5).sample_batch(gt_inds, g)[0][0].long() for _ in range(2000))
    assert counts.sum() == 2000
    assert ((counts - 500).abs() < 80).all()


@pytest.mark.parametrize("add_gt", [True, False])
def test_sample_one_image_with_gt_as_proposals(add_gt):
    bboxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15], [40, 40, 50, 50]])
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70]])
    labels = torch.tensor([2, 0, 1])
    result = AssignResult(3, torch.tensor([1, 2, 0, 0]), torch.tensor([1.0, 1.0, 0.14, 0.0]), torch.tensor([2, 0, -1, -1]))
    res = RandomSampler(num=16, pos_fraction=0.5, add_gt_as_proposals=add_gt).sample(result, bboxes, gt, labels)
    if add_gt:
        assert result.gt_inds.shape == (7,)  # 4 preds + 3 GT prepended
        assert int(res.pos_is_gt.sum()) == 3
        assert sorted(res.pos_assigned_gt_inds.tolist()) == [0, 0, 1, 1, 2]
    else:
        assert res.pos_is_gt.sum() == 0
        assert sorted(res.pos_assigned_gt_inds.tolist()) == [0, 1]
    assert torch.equal(res.pos_gt_bboxes, gt[res.pos_assigned_gt_inds])
    assert torch.equal(res.pos_gt_labels, labels[res.pos_assigned_gt_inds])
    assert len(res.neg_inds) == 2 and res.bboxes.shape == (len(res.pos_inds) + 2, 4)
