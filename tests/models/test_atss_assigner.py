"""ATSSAssigner (mmdet 2.x semantics) on hand-computed cases and against a per-image reference."""

from __future__ import annotations

import pytest
import torch

from detcli.models.assigners import IGNORE, NEGATIVE, ATSSAssigner
from detcli.registry import MATCHERS, build
from detcli.structures import box_overlaps

# one level of three 8x8 anchors in a row: centres (4, 4), (12, 4), (20, 4)
ROW = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8]])


def assign(gt, priors=ROW, levels=None, topk=3, **kw):
    levels = [len(priors)] if levels is None else levels
    ignore = kw.pop("ignore", None)
    a = ATSSAssigner(topk=topk, **kw)
    return a.assign(priors, torch.tensor(gt, dtype=torch.float32).view(-1, 4), ignore,
                    num_level_priors=levels).gt_inds.tolist()


def test_registered_and_threshold_mean_plus_std():
    a = build({"type": "ATSSAssigner", "topk": 9}, MATCHERS)
    assert isinstance(a, ATSSAssigner) and a.topk == 9 and not a.needs_predictions
    # GT [0,0,9,9]: IoUs 64/81 = 0.790, 8/137 = 0.058, 0 -> mean 0.283, std 0.440, thr 0.723: only prior 0
    res = ATSSAssigner(3).assign(ROW, torch.tensor([[0.0, 0, 9, 9]]), gt_labels=torch.tensor([2]),
                                 num_level_priors=[3])
    assert res.gt_inds.tolist() == [1, NEGATIVE, NEGATIVE]
    assert res.labels.tolist() == [2, -1, -1]
    assert res.max_overlaps[0].item() == pytest.approx(64 / 81)
    assert res.max_overlaps[1:].tolist() == [0.0, 0.0]


@pytest.mark.filterwarnings("ignore:std")
def test_two_candidates_never_pass_and_one_gives_nan():
    # with 2 candidates mean + std exceeds the larger IoU; with 1 the unbiased std is NaN (mmdet alike)
    assert assign([0, 0, 9, 9], topk=2) == [NEGATIVE] * 3
    assert assign([0, 0, 9, 9], topk=1) == [NEGATIVE] * 3


def test_topk_per_level_by_centre_distance():
    # level 0: the row; level 1: one 16x16 anchor far away. topk 2 per level: candidates are priors 0, 1
    # (closest of level 0) and 3; IoUs 0.790, 0.058, 0 -> thr as in the 3-candidate case -> prior 0 only
    priors = torch.cat([ROW, torch.tensor([[100.0, 100, 116, 116]])])
    assert assign([0, 0, 9, 9], priors, levels=[3, 1], topk=2) == [1, NEGATIVE, NEGATIVE, NEGATIVE]
    with pytest.raises(ValueError, match="sum to"):
        assign([0, 0, 9, 9], priors, levels=[3, 2])
    with pytest.raises(ValueError, match="num_level_priors"):
        ATSSAssigner(3).assign_batch(ROW, torch.zeros(1, 1, 4), torch.ones(1, 1, dtype=torch.bool))


def test_ties_go_to_max_iou_then_first_gt():
    a, same = [0, 0, 9, 9], [0, 0, 9, 9]
    exact = [0, 0, 8, 8]  # IoU 1 with prior 0 (thr 1/3 + sqrt(1/3) = 0.911)
    assert assign([a, same]) == [1, NEGATIVE, NEGATIVE]  # equal IoU: the first GT
    assert assign([same, a]) == [1, NEGATIVE, NEGATIVE]
    assert assign([a, exact]) == [2, NEGATIVE, NEGATIVE]  # 1.0 > 0.790
    assert assign([exact, a]) == [1, NEGATIVE, NEGATIVE]


def test_iou_equal_to_threshold_is_positive():
    # three candidates with the same IoU: std 0, thr = that IoU -> all positive (>=)
    priors = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8]])
    assert assign([0, 0, 24, 8], priors) == [1, 1, 1]


def test_gt_with_no_prior_centre_inside():
    # GT [9,5,15,9]: prior 1 passes the IoU threshold (0.257 >= 0.234) but its centre y=4 is outside
    assert assign([9, 5, 15, 9]) == [NEGATIVE] * 3
    # centre 0.005 from the right side: not inside (mmdet's 0.01 margin); 0.02: inside
    assert assign([0, 0, 4.005, 9]) == [NEGATIVE] * 3
    assert assign([0, 0, 4.02, 9]) == [1, NEGATIVE, NEGATIVE]


def test_empty_gt_and_no_priors():
    a = ATSSAssigner(9, ignore_iof_thr=0.5)
    res = a.assign(ROW, torch.zeros(0, 4), torch.tensor([[0.0, 0, 30, 30]]), num_level_priors=[3])
    assert res.gt_inds.tolist() == [NEGATIVE] * 3  # no GT: all negative, ignore boxes not applied (mmdet)
    assert res.max_overlaps.tolist() == [0.0] * 3
    valid = torch.tensor([[True, False, True]])
    gt_inds, _ = a.assign_batch(ROW, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool),
                                prior_valid=valid, num_level_priors=[3])
    assert gt_inds.tolist() == [[NEGATIVE, IGNORE, NEGATIVE]]
    res = a.assign(torch.zeros(0, 4), torch.tensor([[0.0, 0, 9, 9]]), num_level_priors=[0])
    assert res.gt_inds.shape == (0,)


def test_all_priors_ignored():
    ignore = torch.tensor([[-10.0, -10, 40, 40]])  # IoF 1 with every prior
    # a positive candidate overrides the ignore (mmdet: ignored priors only rank last by distance)
    assert assign([0, 0, 9, 9], ignore=ignore, ignore_iof_thr=0.5) == [1, IGNORE, IGNORE]
    assert assign([9, 5, 15, 9], ignore=ignore, ignore_iof_thr=0.5) == [IGNORE] * 3
    # off by default
    assert assign([9, 5, 15, 9], ignore=ignore) == [NEGATIVE] * 3


def test_ignored_priors_rank_last():
    # level of 4 priors, topk 3: the ignored prior 0 (closest) is replaced by the 4th as candidate.
    priors = torch.cat([ROW, torch.tensor([[24.0, 0, 32, 8]])])
    ignore = torch.tensor([[0.0, 0, 8, 8]])
    # GT [8,0,16,8] exactly prior 1: candidates 1, 2, 3 (IoU 1, 0, 0) -> prior 1; prior 0 ignored
    assert assign([8, 0, 16, 8], priors, ignore=ignore, ignore_iof_thr=0.5) == [IGNORE, 1, NEGATIVE, NEGATIVE]


def reference(priors, levels, gt, ignore, topk, thr):
    """mmdet 2.x ATSSAssigner.assign for one image, transcribed with loops (valid priors only)."""
    n, g = len(priors), len(gt)
    out = torch.zeros(n, dtype=torch.long)
    if g == 0 or n == 0:
        return out
    ious = box_overlaps(priors, gt)  # (N, G)
    pc = (priors[:, :2] + priors[:, 2:]) / 2
    gc = (gt[:, :2] + gt[:, 2:]) / 2
    dist = (pc[:, None] - gc[None]).pow(2).sum(-1).sqrt()
    if thr > 0 and len(ignore):
        ign = box_overlaps(priors, ignore, mode="iof").amax(1) > thr
        dist[ign] = 1e8
        out[ign] = IGNORE
    best = torch.full((n,), -1.0)
    for j in range(g):
        cands, start = [], 0
        for c in levels:
            cands += (dist[start:start + c, j].topk(min(topk, c), largest=False)[1] + start).tolist()
            start += c
        vals = ious[cands, j]
        t = vals.mean() + vals.std()
        for i, v in zip(cands, vals):
            x, y = pc[i]
            inside = min(x - gt[j, 0], y - gt[j, 1], gt[j, 2] - x, gt[j, 3] - y) > 0.01
            if v >= t and inside and v > best[i]:
                best[i] = v
                out[i] = j + 1
    return out


def test_batch_with_padding_and_invalid_priors_equals_reference():
    g = torch.Generator().manual_seed(0)
    # two levels of square anchors on grids (stride 8 and 16, size 32 and 64) over a 64x64 image
    levels, priors = [], []
    for stride, size in ((8, 32), (16, 64)):
        ys, xs = torch.meshgrid(torch.arange(0, 64, stride), torch.arange(0, 64, stride), indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float() + stride / 2
        priors.append(torch.cat([c - size / 2, c + size / 2], 1))
        levels.append(len(c))
    priors = torch.cat(priors)
    gts = []
    for k in (3, 0, 1, 2):
        xy = torch.rand(k, 2, generator=g) * 40
        gts.append(torch.cat([xy, xy + 4 + torch.rand(k, 2, generator=g) * 30], 1))
    ignores = [torch.tensor([[40.0, 40, 64, 64]]), torch.zeros(0, 4), torch.zeros(0, 4), torch.tensor([[0.0, 0, 20, 64]])]
    b = len(gts)
    pg = torch.zeros(b, 3, 4)
    gv = torch.zeros(b, 3, dtype=torch.bool)
    pi = torch.zeros(b, 1, 4)
    iv = torch.zeros(b, 1, dtype=torch.bool)
    for i in range(b):
        pg[i, :len(gts[i])], gv[i, :len(gts[i])] = gts[i], True
        pi[i, :len(ignores[i])], iv[i, :len(ignores[i])] = ignores[i], True
    a = ATSSAssigner(topk=5, ignore_iof_thr=0.5)
    # all priors valid
    gt_inds, _ = a.assign_batch(priors, pg, gv, pi, iv, num_level_priors=levels)
    total_pos = 0
    for i in range(b):
        ref = reference(priors, levels, gts[i], ignores[i], 5, 0.5)
        assert gt_inds[i].tolist() == ref.tolist(), i
        total_pos += int((ref > 0).sum())
    assert total_pos > 0
    # images padded on the right: priors outside the valid map are left out, as mmdet's inside flags do
    valid = torch.ones(b, len(priors), dtype=torch.bool)
    valid[2:, priors[:, 0] + 16 >= 48] = False  # (anchors whose centre x >= 48)
    gt_inds, _ = a.assign_batch(priors, pg, gv, pi, iv, valid, num_level_priors=levels)
    for i in range(b):
        keep = valid[i]
        sub_levels = [int(keep[:levels[0]].sum()), int(keep[levels[0]:].sum())]
        ref = torch.full((len(priors),), IGNORE)
        ref[keep] = reference(priors[keep], sub_levels, gts[i], ignores[i], 5, 0.5)
        assert gt_inds[i].tolist() == ref.tolist(), i
