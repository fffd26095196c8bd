"""Sampling of assigned priors or proposals into a fixed-size training minibatch (mmdet 2.x samplers).

:class:`RandomSampler` draws at most ``num * pos_fraction`` positives and fills the rest with
negatives, uniformly at random. The draw uses the global torch RNG (seeded by the engine) or an
explicit ``torch.Generator``, so a seeded run samples the same minibatch every time.

The work is done by :meth:`RandomSampler.sample_batch` on assignment codes ``(B, N)`` of a whole
batch at once (no loop over images or priors); :meth:`RandomSampler.sample` is mmdet's one-image form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detcli.models.assigners import NEGATIVE, AssignResult
from detcli.registry import SAMPLERS


@dataclass
class SamplingResult:
    """The sampled minibatch of one image.

    Attributes:
        pos_inds, neg_inds (Tensor[P], Tensor[Q]): indices into the (GT-prepended) candidates.
        pos_bboxes, neg_bboxes (Tensor[P, 4], Tensor[Q, 4]): the sampled boxes.
        pos_is_gt (Tensor[P]): bool, True for GT boxes added as proposals.
        pos_assigned_gt_inds (Tensor[P]): 0-based index of the matched GT of each positive.
        pos_gt_bboxes (Tensor[P, 4]): the matched GT boxes.
        pos_gt_labels (Tensor[P] or None): their classes when ``gt_labels`` was given.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    pos_bboxes: Tensor
    neg_bboxes: Tensor
    pos_is_gt: Tensor
    pos_assigned_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor | None = None

    @property
    def bboxes(self) -> Tensor:
        """Positives then negatives ``(P + Q, 4)``."""
        return torch.cat([self.pos_bboxes, self.neg_bboxes])


def _random_ranks(keys: Tensor, member: Tensor) -> Tensor:
    """Rank of each member of a row in a random order of the row's members (non-members rank last)."""
    keys = keys.masked_fill(~member, 2.0)  # keys are in [0, 1)
    order = keys.argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order))
    return ranks


@SAMPLERS.register()
class RandomSampler:
    """Random positives and negatives (mmdet 2.x ``RandomSampler``).

    Per image: ``P = min(#positives, int(num * pos_fraction))`` positives, then
    ``min(#negatives, num - P)`` negatives, further capped at ``int(neg_pos_ub * max(P, 1))`` when
    ``neg_pos_ub >= 0``. Ignored candidates (code ``-1``) are never drawn.

    Args:
        num: minibatch size per image.
        pos_fraction: largest fraction of positives.
        neg_pos_ub: upper bound of the negative / positive ratio (``-1``: none).
        add_gt_as_proposals: the GT boxes join the candidates as positives (R-CNN; the caller
            prepends them, see :meth:`sample`).

    Example:
        >>> s = RandomSampler(num=4, pos_fraction=0.5)
        >>> pos, neg = s.sample_batch(torch.tensor([[1, 2, 3, 0, 0, 0, -1]]))
        >>> int(pos.sum()), int(neg.sum()), bool(pos[0, 6] or neg[0, 6])
        (2, 2, False)
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True) -> None:
        if num < 1:
            raise ValueError(f"RandomSampler num must be >= 1, got {num}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"RandomSampler pos_fraction must be in [0, 1], got {pos_fraction}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = float(neg_pos_ub)
        self.add_gt_as_proposals = bool(add_gt_as_proposals)

    @torch.no_grad()
    def sample_batch(self, gt_inds: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw the minibatch of every image at once.

        Args:
            gt_inds (Tensor[B, N]): assignment codes (``-1`` ignore, ``0`` negative, ``k`` GT ``k - 1``).
            generator: RNG of the draw (default: the global torch RNG).

        Returns:
            pos, neg (Tensor[B, N] bool): the sampled positives and negatives.
        """
        pos_all = gt_inds > 0
        neg_all = gt_inds == NEGATIVE
        if gt_inds.numel() == 0:
            return pos_all, neg_all
        keys = torch.rand(gt_inds.shape, generator=generator, device=gt_inds.device)
        num_pos = pos_all.sum(dim=1).clamp(max=int(self.num * self.pos_fraction))  # (B,)
        num_neg = (self.num - num_pos).clamp(min=0)
        if self.neg_pos_ub >= 0:
            num_neg = torch.minimum(num_neg, (self.neg_pos_ub * num_pos.clamp(min=1)).long())
        num_neg = torch.minimum(num_neg, neg_all.sum(dim=1))
        pos = pos_all & (_random_ranks(keys, pos_all) < num_pos[:, None])
        neg = neg_all & (_random_ranks(keys, neg_all) < num_neg[:, None])
        return pos, neg

    def sample(self, assign_result: AssignResult, bboxes: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor | None = None, generator: torch.Generator | None = None) -> SamplingResult:
        """Sample one image (mmdet form). With ``add_gt_as_proposals`` and GT present, the GT boxes
        are prepended to ``bboxes`` and to ``assign_result`` (which is modified in place).

        Args:
            assign_result: the assignment of ``bboxes`` (one image).
            bboxes (Tensor[N, 4]): candidates.
            gt_bboxes (Tensor[G, 4]): ground truth.
            gt_labels (Tensor[G]): classes (required to prepend GT when ``assign_result.labels`` is set).
        """
        bboxes = bboxes[:, :4]
        is_gt = torch.zeros(bboxes.shape[0], dtype=torch.bool, device=bboxes.device)
        if self.add_gt_as_proposals and gt_bboxes.shape[0] > 0:
            bboxes = torch.cat([gt_bboxes, bboxes])
            labels = gt_labels if gt_labels is not None else torch.full(
                (gt_bboxes.shape[0],), -1, dtype=torch.long, device=bboxes.device)
            assign_result.add_gt_(labels)
            is_gt = torch.cat([torch.ones(gt_bboxes.shape[0], dtype=torch.bool, device=bboxes.device), is_gt])
        pos, neg = self.sample_batch(assign_result.gt_inds[None], generator)
        pos_inds = pos[0].nonzero(as_tuple=True)[0]
        neg_inds = neg[0].nonzero(as_tuple=True)[0]
        assigned = assign_result.gt_inds[pos_inds] - 1
        return SamplingResult(
            pos_inds, neg_inds, bboxes[pos_inds], bboxes[neg_inds], is_gt[pos_inds], assigned,
            gt_bboxes[assigned] if gt_bboxes.shape[0] else gt_bboxes.new_zeros((0, 4)),
            None if gt_labels is None else gt_labels[assigned])

    def __repr__(self) -> str:
        return (f"RandomSampler(num={self.num}, pos_fraction={self.pos_fraction}, neg_pos_ub={self.neg_pos_ub}, "
                f"add_gt_as_proposals={self.add_gt_as_proposals})")
