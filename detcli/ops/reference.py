"""Pure-PyTorch NMS (no native extension): the "torch" backend and the plain-PyTorch twin of nms.cu.

The greedy NMS of torchvision is reproduced exactly, in two vectorised steps:

1. **Suppression edges.** Only pairs of boxes that overlap with a positive area can have
   ``IoU > iou_threshold >= 0``. Boxes are ranked by ``x1`` and bucketed into horizontal bands of
   height (max box height); for each box ``p`` the candidates ``q`` are the boxes of the (at most
   three) bands that its y-range can reach, with an ``x1`` rank after ``p`` and ``x1 < p.x2``
   (binary searches on one sorted key). The IoU of the candidate pairs is computed with the same
   float operations, in the same order, as torchvision's CPU kernel, so every decision is identical.
2. **Greedy resolution.** With the boxes in stable score order, box ``j`` is kept iff no kept box
   ``i < j`` has an edge to it. This is solved by fixed-point iteration (``keep = not any kept
   predecessor``), which reaches the unique greedy solution after as many rounds as the longest chain
   of suppressions, a handful for detector outputs and random boxes.

The cost grows with the number of candidate pairs (about 0.15 us each here), torchvision's greedy
kernel with boxes x kept boxes / 2 (about 0.01 us each). Boxes that overlap little win: random boxes
(20k, 0..1000 px, sides 1..101 px, 290 pairs per box) take 0.5 s against 1.4 s for
``torchvision.ops.nms``, 8k boxes of 80 classes offset apart (15 pairs per box) 24 ms against 155 ms.
Overlapping detector candidates lose: 4k boxes clustered on 20 objects (530 pairs per box, 68 kept)
take 270 ms against 2 ms. So the sparse path can only win when its pairs are fewer than
N x kept / 30, i.e. a small share of all N (N - 1) / 2 pairs; ``max_pair_share`` lets the caller
decline the others once the pairs are counted, before any is built (the "auto" backend sends them to
torchvision at 1/16; ``python benchmarks/nms_dispatch.py`` prints the table). The work runs on one
intra-op thread (see ``_one_intra_op_thread``).

Example:
    >>> b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    >>> nms_sparse(b, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    tensor([0, 2])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

PAIR_CHUNK = 1 << 22  # candidate pairs materialised at once (bounds the peak memory)
BAND_MARGIN = 1.001  # band height = max box height * margin, so rounding never hides a pair


class SparseNMSDeclined(RuntimeError):
    """:func:`nms_sparse` gave up on an input past one of its limits; the caller runs torchvision."""


class NotConvergedError(SparseNMSDeclined):
    """The greedy resolution needed more than ``max_rounds`` rounds."""


class TooDenseError(SparseNMSDeclined):
    """The boxes overlap too much: more candidate pairs than ``max_pair_share`` of all pairs.

    Attributes:
        pairs: the number of candidate pairs counted.
    """

    def __init__(self, pairs: int, num_boxes: int, limit: float) -> None:
        super().__init__(f"{pairs} candidate pairs for {num_boxes} boxes (limit {limit:g})")
        self.pairs = pairs


def threshold_for(dtype: torch.dtype, iou_threshold: float) -> float:
    """Largest value of ``dtype`` that is ``<= iou_threshold``.

    Comparing an IoU ``x`` of that dtype with it (``x > t``) is then exactly torchvision's comparison
    ``double(x) > iou_threshold``; a float32 0.7 would otherwise round down and flip ties.
    """
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16}.get(dtype)
    if np_dtype is None:
        return float(iou_threshold)
    f = np_dtype(iou_threshold)
    if float(f) > iou_threshold:
        f = np.nextafter(f, np_dtype(-np.inf))
    return float(f)


def supported(boxes: Tensor, iou_threshold: float) -> bool:
    """True when :func:`nms_sparse` applies: float32/float64 finite boxes and ``iou_threshold >= 0``
    (float16 is left to torchvision, whose CPU kernel has no float16 to match)."""
    return (
        iou_threshold >= 0
        and boxes.dtype in (torch.float32, torch.float64)
        and bool(torch.isfinite(boxes).all())
    )


def _candidate_chunks(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor,
                      max_pairs: float | None = None) -> list[tuple[Tensor, Tensor]]:
    """Pairs ``(p, q)`` (each unordered overlapping pair at least once) in chunks of <= PAIR_CHUNK.

    Raises:
        TooDenseError: there are more than ``max_pairs`` candidate pairs (counted before any is built).
    """
    n = x1.numel()
    arange = torch.arange(n, device=x1.device)
    x_order = torch.sort(x1, stable=True).indices  # (N,)
    rank = torch.empty_like(x_order)
    rank[x_order] = arange  # rank of each box in x1 order
    x_end_rank = torch.searchsorted(x1[x_order].contiguous(), x2.contiguous(), side="left")  # (N,) ranks with x1 < x2_p
    y1d, y2d = y1.double(), y2.double()
    y_min = float(y1d.min())
    extent = float(y2d.max()) - y_min
    # any band height >= the tallest box works; at least extent / n keeps band * n + rank in int64
    band_h = max(float((y2d - y1d).max()) * BAND_MARGIN, extent / n, 1e-6)
    band = torch.floor((y1d - y_min) / band_h).long()  # (N,)
    sorted_key, key_order = torch.sort(band * n + rank)  # boxes by (band, x1 rank)
    first_band = torch.floor((y1d - band_h - y_min) / band_h).long().clamp(min=0)  # (N,)
    steps = []
    for step in range(3):  # the y-range (y1 - band_h, y2) spans at most three bands
        b = first_band + step
        lo = torch.searchsorted(sorted_key, b * n + rank + 1)  # (N,)
        hi = torch.searchsorted(sorted_key, b * n + x_end_rank)  # (N,)
        counts = (hi - lo).clamp(min=0)  # (N,)
        steps.append((lo, counts, torch.cumsum(counts, 0)))
    total_pairs = sum(int(cum[-1]) for _, _, cum in steps)
    if max_pairs is not None and total_pairs > max_pairs:
        raise TooDenseError(total_pairs, n, max_pairs)
    chunks = []
    for lo, counts, cum in steps:
        total = int(cum[-1])
        start = 0
        while start < total:
            # boxes whose candidate lists fall (mostly) in [start, start + PAIR_CHUNK)
            first = int(torch.searchsorted(cum, torch.tensor(start, device=cum.device), right=True))
            last = int(torch.searchsorted(cum, torch.tensor(start + PAIR_CHUNK, device=cum.device), right=True))
            last = min(max(last, first + 1), n)
            c = counts[first:last]
            num = int(c.sum())
            p = torch.repeat_interleave(arange[first:last], c)  # (P,)
            offsets = torch.arange(num, device=x1.device) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
            q = key_order[torch.repeat_interleave(lo[first:last], c) + offsets]  # (P,)
            chunks.append((p, q))
            start = int(cum[last - 1])
    return chunks


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run the many small gathers on one thread: on a busy machine, waking torch's OpenMP pool for
    each of them cost 0.5 s per call for 1000 boxes (1.9 ms single-threaded). Process-wide while
    active; it changes speed only, never results."""
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def nms_sparse(boxes: Tensor, scores: Tensor, iou_threshold: float, max_rounds: int | None = None,
               max_pair_share: float | None = None) -> Tensor:
    """Greedy NMS in plain PyTorch, identical to :func:`torchvision.ops.nms`.

    Args:
        boxes (Tensor[N, 4]): (x1, y1, x2, y2), finite.
        scores (Tensor[N]): ties keep the lower index first (stable sort).
        iou_threshold: ``>= 0``; suppress when IoU with a kept box is ``> iou_threshold``.
        max_rounds: raise :class:`NotConvergedError` after this many resolution rounds (``None``: no cap).
        max_pair_share: raise :class:`TooDenseError`, before any pair is materialised, when the
            candidate pairs are more than this share of all ``N (N - 1) / 2`` pairs (``None``: no cap).

    Returns:
        Tensor[K] int64: kept indices, by decreasing score.
    """
    with torch.no_grad(), _one_intra_op_thread():
        return _nms_sparse(boxes, scores, iou_threshold, max_rounds, max_pair_share)


def _nms_sparse(boxes: Tensor, scores: Tensor, iou_threshold: float, max_rounds: int | None,
                max_pair_share: float | None) -> Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices  # (N,)
    sorted_boxes = boxes.index_select(0, order)  # (N, 4)
    x1, y1, x2, y2 = (c.contiguous() for c in sorted_boxes.unbind(1))
    areas = (x2 - x1) * (y2 - y1)  # (N,)
    threshold = threshold_for(boxes.dtype, iou_threshold)
    firsts, seconds = [], []
    max_pairs = None if max_pair_share is None else max_pair_share * n * (n - 1) / 2
    for p, q in _candidate_chunks(x1, y1, x2, y2, max_pairs):
        # same operations and order as torchvision's CPU kernel
        w = (torch.minimum(x2[p], x2[q]) - torch.maximum(x1[p], x1[q])).clamp(min=0)  # (P,)
        h = (torch.minimum(y2[p], y2[q]) - torch.maximum(y1[p], y1[q])).clamp(min=0)  # (P,)
        inter = w * h  # (P,)
        suppress = inter / (areas[p] + areas[q] - inter) > threshold  # (P,)
        p, q = p[suppress], q[suppress]
        firsts.append(torch.minimum(p, q))  # higher score
        seconds.append(torch.maximum(p, q))
    first = torch.cat(firsts) if firsts else order.new_empty(0)  # (E,)
    second = torch.cat(seconds) if seconds else order.new_empty(0)  # (E,)

    # resolve the greedy order: keep[j] = no kept i < j with an edge i -> j
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    rounds = 0
    while True:
        rounds += 1
        suppressed = torch.zeros_like(keep)
        suppressed[second[keep[first]]] = True
        new_keep = ~suppressed
        if torch.equal(new_keep, keep):
            break
        if max_rounds is not None and rounds >= max_rounds:
            raise NotConvergedError(f"greedy resolution did not converge in {max_rounds} rounds")
        keep = new_keep
    return order[keep.nonzero().squeeze(1)]
