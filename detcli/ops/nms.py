"""Non-maximum suppression entry points (torchvision-shaped).

IoU has no +1 (mmdet 2.x) and a box is suppressed when its IoU with a kept, higher-scoring box is
strictly greater than ``iou_threshold``, exactly as ``torchvision.ops.nms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

import torch
from torch import Tensor

from detcli.ops.dispatch import backend_for, run_parts


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2), ``0 <= x1 <= x2``.
        scores (Tensor[N]): higher is better; ties keep the lower index first (stable sort).
        iou_threshold: suppress boxes whose IoU with a kept box is ``> iou_threshold``.

    Returns:
        Tensor[K] int64: indices of kept boxes, sorted by decreasing score.

    Raises:
        ValueError: ``boxes`` is not (N, 4) or ``scores`` not (N,).
        KernelError: the ``cupy`` backend is forced but cannot run (see :mod:`detcli.ops.dispatch`).

    Example:
        >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
        >>> nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)
        tensor([0, 2])
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: scores must have shape ({boxes.shape[0]},) to match boxes, got {tuple(scores.shape)}")
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    return backend_for(boxes, num_boxes=boxes.shape[0]).nms(boxes, scores, float(iou_threshold))


#: CPU batched NMS with at least this many boxes runs one NMS per category (torchvision does from 1000) ...
PER_CLASS_NMS_MIN_BOXES = 4000
#: ... and from this many boxes when the categories are few, this many boxes or more each on average:
#: greedy NMS over offset categories costs boxes x kept boxes of all categories together, so the RPN's
#: 5 levels of ~800 proposals run 3-4x faster split, while 80 classes of 25 boxes gain nothing from it.
PER_CLASS_NMS_FEW_MIN_BOXES = 2000
PER_CLASS_NMS_FEW_BOXES_PER_CLASS = 100


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category ``idxs``: boxes of different categories never suppress each other.

    Boxes are offset by ``idx * (max_coordinate + 1)`` so that one NMS call handles all categories;
    on the CPU, from :data:`PER_CLASS_NMS_MIN_BOXES` boxes (or :data:`PER_CLASS_NMS_FEW_MIN_BOXES` in few
    categories), each category runs its own NMS instead, over the threads
    (same indices in the same order, ties included: greedy NMS work grows with boxes x kept boxes, which the
    split keeps per category).

    Returns:
        Tensor[K] int64: kept indices sorted by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    n = boxes.shape[0]
    if (boxes.device.type == "cpu" and min(PER_CLASS_NMS_MIN_BOXES, PER_CLASS_NMS_FEW_MIN_BOXES) <= n
            and not torch.jit.is_tracing()):
        counts = torch.unique(idxs, return_counts=True)[1]
        few = n >= PER_CLASS_NMS_FEW_MIN_BOXES and n >= PER_CLASS_NMS_FEW_BOXES_PER_CLASS * counts.numel()
        if n >= PER_CLASS_NMS_MIN_BOXES or few:
            return _per_class_nms(boxes, scores, idxs, counts, float(iou_threshold))
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1, dtype=boxes.dtype, device=boxes.device))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _per_class_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, counts: Tensor, iou_threshold: float) -> Tensor:
    """One NMS per category (``counts``: boxes of each category, by increasing ``idxs``), the
    categories dealt out to the torch threads (largest first, each to the least loaded thread); the
    NMS kernels release the GIL. Backends are chosen in this thread, where a
    :func:`~detcli.ops.dispatch.use_backend` context applies."""
    groups = torch.sort(idxs, stable=True).indices.split(counts.tolist())  # indices of each category, ascending
    jobs = sorted(((m, backend_for(boxes, num_boxes=m.numel())) for m in groups), key=lambda job: -job[0].numel())
    workers = max(1, min(torch.get_num_threads(), len(jobs)))
    shares: list[list[tuple[Tensor, Any]]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for job in jobs:
        j = loads.index(min(loads))
        shares[j].append(job)
        loads[j] += job[0].numel()

    def run(j: int) -> list[Tensor]:
        return [m[backend.nms(boxes[m], scores[m], iou_threshold)] for m, backend in shares[j]]

    # by index, then stably by score: ties in the order of one NMS over offset categories (lower index first)
    keep = torch.sort(torch.cat([kept for part in run_parts(run, workers) for kept in part])).values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


@overload
def multiclass_nms(
    multi_bboxes: Tensor, multi_scores: Tensor, score_thr: float, nms_cfg: Mapping[str, Any], max_num: int = -1,
    score_factors: Tensor | None = None, return_inds: Literal[False] = False,
) -> tuple[Tensor, Tensor]: ...


@overload
def multiclass_nms(
    multi_bboxes: Tensor, multi_scores: Tensor, score_thr: float, nms_cfg: Mapping[str, Any], max_num: int = -1,
    score_factors: Tensor | None = None, *, return_inds: Literal[True],
) -> tuple[Tensor, Tensor, Tensor]: ...


def multiclass_nms(
    multi_bboxes: Tensor,
    multi_scores: Tensor,
    score_thr: float,
    nms_cfg: Mapping[str, Any],
    max_num: int = -1,
    score_factors: Tensor | None = None,
    return_inds: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Class-aware NMS over per-class scores (mmdet 2.x semantics).

    Args:
        multi_bboxes (Tensor[n, 4] or Tensor[n, C*4]): shared or class-specific boxes.
        multi_scores (Tensor[n, C+1]): per-class scores; the last column (background) is ignored.
        score_thr: keep candidates with score ``> score_thr`` (strict).
        nms_cfg: ``{type: nms, iou_threshold: T}``; ``class_agnostic: true`` runs one NMS over all classes.
        max_num: keep at most this many detections (``-1``: all).
        score_factors (Tensor[n]): multiplied into the scores after thresholding (e.g. centerness).
        return_inds: also return the indices of the kept candidates in the flattened ``n * C`` list.

    Returns:
        ``dets (k, 5)`` with the score in column 4, ``labels (k,)`` 0-based, sorted by decreasing
        score, and ``inds (k,)`` when ``return_inds``. Empty inputs give ``(0, 5)`` and ``(0,)``.
    """
    num_classes = multi_scores.size(1) - 1
    if multi_bboxes.shape[1] > 4:
        bboxes = multi_bboxes.view(multi_scores.size(0), -1, 4)  # (n, C, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 4)
    scores = multi_scores[:, :-1]  # (n, C)
    labels = torch.arange(num_classes, dtype=torch.long, device=scores.device).view(1, -1).expand_as(scores)
    bboxes = bboxes.reshape(-1, 4)
    scores = scores.reshape(-1)
    labels = labels.reshape(-1)
    # remove low scoring candidates
    valid_mask = scores > score_thr
    if score_factors is not None:
        factors = score_factors.view(-1, 1).expand(multi_scores.size(0), num_classes).reshape(-1)
        scores = scores * factors
    inds = valid_mask.nonzero(as_tuple=False).squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        dets = multi_bboxes.new_zeros((0, 5))
        empty_labels = multi_bboxes.new_zeros((0,), dtype=torch.long)
        if return_inds:
            return dets, empty_labels, inds
        return dets, empty_labels
    iou_threshold = float(nms_cfg.get("iou_threshold", nms_cfg.get("iou_thr", 0.5)))
    if nms_cfg.get("class_agnostic", False):
        keep = nms(bboxes, scores, iou_threshold)
    else:
        keep = batched_nms(bboxes, scores, labels, iou_threshold)
    if max_num > 0:
        keep = keep[:max_num]
    dets = torch.cat([bboxes[keep], scores[keep, None]], dim=1)
    if return_inds:
        return dets, labels[keep], inds[keep]
    return dets, labels[keep]
