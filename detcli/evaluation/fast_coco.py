"""det's COCO evaluation engine: pycocotools' matching and accumulation rules, computed on arrays.

pycocotools evaluates image by image and category by category in Python; the rules themselves are
simple and are reproduced here on flat numpy arrays, so the numbers are the same floats (the same
operations in the same order) and only the bookkeeping is faster:

- **IoU**: boxes ``[x, y, w, h]``; the overlap is ``min(x1+w1, x2+w2) - max(x1, x2)`` per axis (0 when
  not positive), the union ``area_d + area_g - inter`` (``area_d`` alone for a crowd ground truth).
  Masks use ``pycocotools.mask.iou`` itself, one call per (image, category) pair.
- **Matching** (per image, category, area range and IoU threshold): detections sorted by score (stable),
  the first ``maxDets[-1]`` kept; ground truth outside the area range or crowd is "ignored". Each
  detection in turn takes the still-free ground truth with the highest IoU >= the threshold (capped at
  ``1 - 1e-10``; ties go to the later one), preferring non-ignored ground truth; crowd ground truth
  stays free. A detection matched to ignored ground truth, or unmatched and outside the area range,
  is ignored.
- **Accumulation** (per category, area range, maxDets): the kept detections of every image in image
  order, stably sorted by score; cumulative true/false positives; recall ``tp / n_gt``, precision
  ``tp / (tp + fp + eps)`` made monotone from the right and read at the 101 recall thresholds.

Categories are independent, so :func:`evaluate_arrays` can split them over forked processes and
merge the per-category slices of ``precision``, ``recall`` and ``scores`` exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detcli.errors import DatasetError

logger = logging.getLogger(__name__)

#: Below this many detections a second process costs more than it saves.
MIN_PARALLEL_DETECTIONS = 20_000


def auto_workers() -> int:
    """Processes used when asked for "automatic": 2 when this process may use two cores and the
    machine has one to spare (1-minute load average at most ``cores - 1``), else 1. On a busy
    machine a second process gets no core of its own and only adds fork and merge costs (measured:
    20% slower end to end at load ~6 on 2 cores); the numbers are the same either way."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        return 1
    return 2 if os.getloadavg()[0] <= cores - 1 else 1


@dataclass
class Side:
    """One side (ground truth or detections) as flat arrays, one row per annotation.

    Attributes:
        img: position of the image in the sorted evaluated image ids.
        cat: position of the category in the sorted evaluated category ids (0 when class-agnostic).
        area: ``area`` (ground truth: from the file; detections: ``w*h`` or the mask area).
        box: ``(N, 4)`` xywh float64 (only used by bbox IoU).
        score: detections' scores (zeros for ground truth).
        crowd: ground truth ``iscrowd`` (False for detections).
        ann_id: ground truth annotation ids (a match to id 0 counts as no match, as in pycocotools).
        rles: per row, a compressed RLE dict (segm only), else None.
    """

    img: np.ndarray
    cat: np.ndarray
    area: np.ndarray
    box: np.ndarray
    score: np.ndarray
    crowd: np.ndarray
    ann_id: np.ndarray
    rles: list[Any] | None = None

    def take(self, index: np.ndarray) -> "Side":
        rles = None if self.rles is None else [self.rles[i] for i in index.tolist()]
        return Side(self.img[index], self.cat[index], self.area[index], self.box[index], self.score[index],
                    self.crowd[index], self.ann_id[index], rles)

    def __len__(self) -> int:
        return len(self.img)


@dataclass
class EvalParams:
    """The pycocotools ``Params`` fields that matter (sorted unique ids, as ``COCOeval.evaluate`` makes them)."""

    img_ids: list[int]
    cat_ids: list[int]
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    max_dets: list[int]
    area_rngs: list[list[float]]
    use_cats: bool = True
    iou_type: str = "bbox"


def ground_truth_side(coco_gt: Any, params: EvalParams) -> Side:
    """Flat arrays of the ground truth of ``params``' images and categories, in pycocotools' order.

    pycocotools lists annotations image by image (``imgToAnns``, file order within an image); rows
    here keep that order within each (image, category) group, which decides IoU ties.
    """
    img_pos = {img_id: i for i, img_id in enumerate(params.img_ids)}
    cat_pos = {cat_id: k for k, cat_id in enumerate(params.cat_ids)}
    anns = []
    for img_id in params.img_ids:
        for ann in coco_gt.imgToAnns.get(img_id, ()):
            if not params.use_cats or ann["category_id"] in cat_pos:
                anns.append(ann)
    n = len(anns)
    img = np.fromiter((img_pos[a["image_id"]] for a in anns), np.int64, n)
    cat = (np.fromiter((cat_pos[a["category_id"]] for a in anns), np.int64, n) if params.use_cats
           else np.zeros(n, np.int64))
    try:
        area = np.fromiter((a["area"] for a in anns), np.float64, n)
    except KeyError:
        bad = next(a for a in anns if "area" not in a)
        raise DatasetError(f"ground truth annotation id {bad.get('id')} has no 'area' (COCO evaluation needs it)") from None
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), bool, n)
    ann_id = np.fromiter((a.get("id", 0) for a in anns), np.int64, n)
    if params.iou_type == "segm":
        bad = next((a for a in anns if "segmentation" not in a), None)
        if bad is not None:
            raise DatasetError(f"ground truth annotation id {bad.get('id')} has no segmentation; the segm metric needs masks")
        box = np.zeros((n, 4))
        rles: list[Any] | None = anns  # converted to RLE lazily, only where detections meet them
    else:
        box = np.asarray([a["bbox"] for a in anns], np.float64).reshape(n, 4)
        rles = None
    return Side(img, cat, area, box, np.zeros(n), crowd, ann_id, rles)


@dataclass
class ResultColumns:
    """A COCO results list as columns (what the det engine reads; built without keeping the dicts).

    Attributes:
        image_id, category_id: int64 ``(N,)``.
        score: float64 ``(N,)``.
        bbox: float64 ``(N, 4)`` xywh, or None when the entries have no boxes.
        segmentation: per entry, its ``segmentation`` (RLE dict, polygons), or None.
        first_has_bbox: the first entry has a non-empty ``bbox`` (``COCO.loadRes`` then takes every
            area as ``w * h``).
    """

    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    bbox: np.ndarray | None
    segmentation: list[Any] | None
    first_has_bbox: bool

    def __len__(self) -> int:
        return len(self.image_id)

    @staticmethod
    def cat(parts: Sequence["ResultColumns"]) -> "ResultColumns":
        """Concatenate in order (the first part decides ``first_has_bbox``)."""
        boxes = [p.bbox for p in parts]
        segms = [p.segmentation for p in parts]
        return ResultColumns(
            np.concatenate([p.image_id for p in parts]), np.concatenate([p.category_id for p in parts]),
            np.concatenate([p.score for p in parts]),
            None if any(b is None for b in boxes) else np.concatenate(boxes),  # type: ignore[arg-type]
            None if any(sg is None for sg in segms) else [x for sg in segms for x in sg],  # type: ignore[union-attr]
            parts[0].first_has_bbox,
        )


def _numbers(values: list[Any], shape: tuple[int, ...], key: str) -> np.ndarray:
    """float64 array of numbers; ``TypeError`` for strings, nulls, nested or ragged values (which a float
    conversion would accept or turn into an object array)."""
    array = np.array(values)
    if array.shape != shape or array.dtype.kind not in "biuf":
        raise TypeError(f"{key}: not numbers of shape {shape}")
    return array.astype(np.float64)


def result_columns(results: Sequence[dict[str, Any]], with_bbox: bool = True, with_segm: bool = False) -> ResultColumns:
    """Columns of a results list. Raises ``KeyError``/``TypeError``/``ValueError`` on a malformed entry,
    including a score or box that is not a number (callers with a file to blame re-check the
    dicts for a precise message).

    Args:
        with_bbox: read ``bbox`` of every entry (always done when the first entry has one).
        with_segm: read ``segmentation`` of every entry.
    """
    n = len(results)
    first_has_bbox = bool(n) and "bbox" in results[0] and not results[0]["bbox"] == []
    bbox = None
    if (with_bbox or first_has_bbox) and n:
        bbox = _numbers([r["bbox"] for r in results], (n, 4), "bbox")
    elif with_bbox:
        bbox = np.zeros((0, 4))
    return ResultColumns(
        np.fromiter((r["image_id"] for r in results), np.int64, n),
        np.fromiter((r["category_id"] for r in results), np.int64, n),
        _numbers([r["score"] for r in results], (n,), "score"),
        bbox,
        [r["segmentation"] for r in results] if with_segm else None,
        first_has_bbox,
    )


def engine_columns(results: Sequence[dict[str, Any]], with_segm: bool) -> ResultColumns:
    """Columns of a results list as the det engine reads them: boxes when the first entry has a
    non-empty ``bbox``, else (and with ``with_segm``) the segmentations too."""
    by_box = bool(results) and "bbox" in results[0] and not results[0]["bbox"] == []
    return result_columns(results, with_bbox=by_box, with_segm=with_segm or not by_box)


def results_side(coco_gt: Any, results: Sequence[dict[str, Any]] | ResultColumns, params: EvalParams) -> Side:
    """Flat arrays of the results entries on ``params``' images and categories, in results order.

    The area follows ``COCO.loadRes``: when the first entry has a non-empty ``bbox`` every area is
    ``w * h`` (also for segm), otherwise the area of the mask.
    """
    segm = params.iou_type == "segm"
    if not isinstance(results, ResultColumns):
        results = engine_columns(results, segm)
    n = len(results)
    if n == 0:
        return Side(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)), np.zeros(0),
                    np.zeros(0, bool), np.zeros(0, np.int64), [] if segm else None)
    rles = None
    if segm or not results.first_has_bbox:
        from pycocotools import mask as mask_utils

        if results.segmentation is None:
            raise ValueError("results without boxes need a segmentation per entry")
        rles = [seg if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes))
                else _result_rle(coco_gt, {"image_id": int(i), "segmentation": seg})
                for seg, i in zip(results.segmentation, results.image_id.tolist())]
    if results.first_has_bbox:
        assert results.bbox is not None
        box = results.bbox
        area = box[:, 2] * box[:, 3]
    else:
        area = mask_utils.area(rles).astype(np.float64)
        box = mask_utils.toBbox(rles).astype(np.float64).reshape(n, 4)
    img_ids, cat_ids = results.image_id, results.category_id
    sorted_imgs = np.asarray(params.img_ids, np.int64)
    img = np.searchsorted(sorted_imgs, img_ids)
    keep = (img < len(sorted_imgs)) & (sorted_imgs[np.minimum(img, len(sorted_imgs) - 1)] == img_ids)
    if params.use_cats:
        sorted_cats = np.asarray(params.cat_ids, np.int64)
        cat = np.searchsorted(sorted_cats, cat_ids)
        keep &= (cat < len(sorted_cats)) & (sorted_cats[np.minimum(cat, len(sorted_cats) - 1)] == cat_ids)
    else:
        cat = np.zeros(n, np.int64)
    side = Side(img, cat, area, box, results.score, np.zeros(n, bool), np.arange(1, n + 1), rles if segm else None)
    if not keep.all():
        side = side.take(np.flatnonzero(keep))
    return side


def _result_rle(coco_gt: Any, entry: dict[str, Any]) -> Any:
    """The compressed RLE of a result or annotation entry (``COCO.annToRLE`` semantics)."""
    return coco_gt.annToRLE(entry)


def _group(side: Side, num_imgs: int, by_score: bool) -> tuple[Side, np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by (category, image[, -score]) stably; return (sorted side, group keys, starts, counts)."""
    keys = side.cat * num_imgs + side.img
    order = np.lexsort((-side.score, keys)) if by_score else np.argsort(keys, kind="stable")
    side = side.take(order)
    keys = keys[order]
    uniq, starts, counts = np.unique(keys, return_index=True, return_counts=True)
    return side, uniq, starts, counts


def _bbox_iou(dt_box: np.ndarray, gt_box: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of matching rows ``dt_box[i]`` / ``gt_box[i]`` (xywh), crowd: union = detection area."""
    dx, dy, dw, dh = dt_box.T
    gx, gy, gw, gh = gt_box.T
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    da = dw * dh
    union = np.where(crowd, da, da + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


@dataclass
class _Pairs:
    """(image, category) groups holding both detections and ground truth, with their IoU blocks."""

    dt_start: np.ndarray
    dt_count: np.ndarray
    gt_start: np.ndarray
    gt_count: np.ndarray
    iou_offset: np.ndarray  # start of each (D, G) block (row-major) in ``iou``
    iou: np.ndarray


def _pair_ious(dt: Side, dt_keys: np.ndarray, dt_starts: np.ndarray, dt_counts: np.ndarray,
               gt: Side, gt_keys: np.ndarray, gt_starts: np.ndarray, gt_counts: np.ndarray,
               iou_type: str, coco_gt: Any) -> _Pairs:
    common, di, gi = np.intersect1d(dt_keys, gt_keys, assume_unique=True, return_indices=True)
    ds, dc, gs, gc = dt_starts[di], dt_counts[di], gt_starts[gi], gt_counts[gi]
    sizes = dc * gc
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else np.zeros(0, np.int64)
    total = int(sizes.sum())
    if iou_type == "segm":
        from pycocotools import mask as mask_utils

        iou = np.zeros(total)
        assert dt.rles is not None and gt.rles is not None
        for p in range(len(common)):
            d0, g0 = int(ds[p]), int(gs[p])
            d_rles = [_rle_of(dt.rles, i, coco_gt) for i in range(d0, d0 + int(dc[p]))]
            g_rles = [_rle_of(gt.rles, i, coco_gt) for i in range(g0, g0 + int(gc[p]))]
            block = mask_utils.iou(d_rles, g_rles, [int(c) for c in gt.crowd[g0:g0 + int(gc[p])]])
            iou[offsets[p]:offsets[p] + sizes[p]] = np.asarray(block, np.float64).reshape(-1)
    else:
        # row r of the flat array is (pair p, detection d, ground truth g), d-major as a (D, G) block
        pair = np.repeat(np.arange(len(common)), sizes)
        local = np.arange(total) - offsets[pair]
        d_idx = ds[pair] + local // gc[pair]
        g_idx = gs[pair] + local % gc[pair]
        iou = _bbox_iou(dt.box[d_idx], gt.box[g_idx], gt.crowd[g_idx])
    return _Pairs(ds, dc, gs, gc, offsets, iou)


def _rle_of(rles: list[Any], i: int, coco_gt: Any) -> Any:
    item = rles[i]
    if isinstance(item, dict) and "counts" in item and "size" in item and "image_id" not in item:
        return item
    rle = _result_rle(coco_gt, item)
    rles[i] = rle
    return rle


def _match(pairs: _Pairs, dt: Side, gt: Side, params: EvalParams) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of every pair; returns ``matched (A, T, N_dt)`` and ``ignored (A, T, N_dt)``."""
    thrs = np.minimum(np.asarray(params.iou_thrs, np.float64), 1 - 1e-10)  # (T,)
    area_lo = np.asarray([a[0] for a in params.area_rngs], np.float64)
    area_hi = np.asarray([a[1] for a in params.area_rngs], np.float64)
    n_a, n_t, n_dt = len(area_lo), len(thrs), len(dt)
    gt_ig = gt.crowd[None, :] | (gt.area[None, :] < area_lo[:, None]) | (gt.area[None, :] > area_hi[:, None])  # (A, N_gt)
    dt_out = (dt.area[None, :] < area_lo[:, None]) | (dt.area[None, :] > area_hi[:, None])  # (A, N_dt)
    matched = np.zeros((n_a, n_t, n_dt), bool)
    hit_ignored = np.zeros((n_a, n_t, n_dt), bool)
    hit_id_zero = np.zeros((n_a, n_t, n_dt), bool)
    for g in np.unique(pairs.gt_count).tolist():
        sel = np.flatnonzero(pairs.gt_count == g)
        sel = sel[np.argsort(-pairs.dt_count[sel], kind="stable")]  # longest first: active pairs are a prefix
        d_count = pairs.dt_count[sel]
        n_p, d_max = len(sel), int(d_count[0])
        gt_rows = pairs.gt_start[sel][:, None] + np.arange(g)[None, :]  # (P, G)
        crowd = gt.crowd[gt_rows]  # (P, G)
        ig = np.transpose(gt_ig[:, gt_rows], (1, 0, 2))  # (P, A, G)
        id_zero = gt.ann_id[gt_rows] == 0  # (P, G)
        taken = np.zeros((n_p, n_a, n_t, g), bool)  # ground truth already matched (non-crowd matters)
        free_always = crowd[:, None, None, :]
        for j in range(d_max):
            n_j = int(np.searchsorted(-d_count, -j, side="left"))  # pairs with more than j detections
            if n_j == 0:
                break
            rows = pairs.iou_offset[sel[:n_j]][:, None] + j * g + np.arange(g)[None, :]
            ious = pairs.iou[rows]  # (P_j, G)
            ok = (ious[:, None, :] >= thrs[None, :, None])[:, None, :, :]  # (P_j, 1, T, G)
            ok = ok & ~(taken[:n_j] & ~free_always[:n_j])  # (P_j, A, T, G)
            ig_j = ig[:n_j][:, :, None, :]  # (P_j, A, 1, G)
            ok_non = ok & ~ig_j
            use = np.where(ok_non.any(-1, keepdims=True), ok_non, ok & ig_j)
            vals = np.where(use, ious[:, None, None, :], -np.inf)
            m = g - 1 - np.argmax(vals[..., ::-1], axis=-1)  # last index of the maximum: (P_j, A, T)
            has = use.any(-1)
            pj, aj, tj = np.nonzero(has)
            mj = m[pj, aj, tj]
            taken[pj, aj, tj, mj] = True
            det_rows = pairs.dt_start[sel[:n_j]][pj] + j
            matched[aj, tj, det_rows] = True
            hit_ignored[aj, tj, det_rows] = ig[pj, aj, mj]
            hit_id_zero[aj, tj, det_rows] = id_zero[pj, mj]
    counted = matched & ~hit_id_zero  # pycocotools stores the GT id; id 0 reads as "no match"
    ignored = (matched & hit_ignored) | (~counted & dt_out[:, None, :])
    return counted, ignored


def _accumulate(dt: Side, gt: Side, counted: np.ndarray, ignored: np.ndarray, rank: np.ndarray,
                params: EvalParams, cat_positions: Sequence[int]) -> dict[str, np.ndarray]:
    """precision ``(T, R, K, A, M)``, recall ``(T, K, A, M)``, scores like precision, for ``cat_positions``."""
    n_t, n_r, n_k = len(params.iou_thrs), len(params.rec_thrs), len(params.cat_ids) if params.use_cats else 1
    n_a, n_m = len(params.area_rngs), len(params.max_dets)
    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    scores = -np.ones((n_t, n_r, n_k, n_a, n_m))
    area_lo = np.asarray([a[0] for a in params.area_rngs], np.float64)
    area_hi = np.asarray([a[1] for a in params.area_rngs], np.float64)
    dt_order = np.argsort(dt.cat, kind="stable")
    dt_bounds = np.searchsorted(dt.cat[dt_order], np.arange(n_k + 1))
    gt_order = np.argsort(gt.cat, kind="stable")
    gt_bounds = np.searchsorted(gt.cat[gt_order], np.arange(n_k + 1))
    rec_thrs = np.asarray(params.rec_thrs)
    eps = np.spacing(1)
    n_t = len(params.iou_thrs)
    for k in cat_positions:
        rows = dt_order[dt_bounds[k]:dt_bounds[k + 1]]
        g_rows = gt_order[gt_bounds[k]:gt_bounds[k + 1]]
        if len(rows) == 0 and len(g_rows) == 0:
            continue  # pycocotools: no evaluated image has anything of this class
        # rows are in image order, then score rank inside the image (as pycocotools concatenates
        # them); a stable sort by score follows
        rows = rows[np.argsort(-dt.score[rows], kind="mergesort")]
        g_area, g_crowd = gt.area[g_rows], gt.crowd[g_rows]
        for a in range(n_a):
            npig = int(np.count_nonzero(~(g_crowd | (g_area < area_lo[a]) | (g_area > area_hi[a]))))
            if npig == 0:
                continue
            for mi, max_det in enumerate(params.max_dets):
                sub = rows[rank[rows] < max_det]
                tps = counted[a][:, sub] & ~ignored[a][:, sub]  # (T, nd)
                fps = ~counted[a][:, sub] & ~ignored[a][:, sub]
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                nd = len(sub)
                if nd == 0:
                    recall[:, k, a, mi] = 0
                    precision[:, :, k, a, mi] = 0
                    scores[:, :, k, a, mi] = 0
                    continue
                rc = tp_sum / npig  # (T, nd)
                pr = tp_sum / (fp_sum + tp_sum + eps)
                recall[:, k, a, mi] = rc[:, -1]
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope from the right
                inds = np.stack([np.searchsorted(rc[t], rec_thrs, side="left") for t in range(n_t)])  # (T, R)
                inside = inds < nd
                clipped = np.minimum(inds, nd - 1)
                precision[:, :, k, a, mi] = np.where(inside, np.take_along_axis(pr, clipped, axis=1), 0.0)
                scores[:, :, k, a, mi] = np.where(inside, dt.score[sub][clipped], 0.0)
    return {"precision": precision, "recall": recall, "scores": scores}


_FORKED: dict[str, Any] = {}


def _evaluate_part(dt: Side, gt: Side, params: EvalParams, coco_gt: Any, cat_positions: Sequence[int]) -> dict[str, np.ndarray]:
    """Match and accumulate the categories ``cat_positions`` only."""
    wanted = np.zeros(max(len(params.cat_ids), 1), bool)
    wanted[list(cat_positions)] = True
    dt = dt.take(np.flatnonzero(wanted[dt.cat]))
    gt = gt.take(np.flatnonzero(wanted[gt.cat]))
    n_imgs = max(len(params.img_ids), 1)
    dt, dt_keys, dt_starts, dt_counts = _group(dt, n_imgs, by_score=True)
    rank = np.arange(len(dt)) - np.repeat(dt_starts, dt_counts)
    keep = np.flatnonzero(rank < params.max_dets[-1])  # pycocotools keeps the best maxDets[-1] per image+class
    if len(keep) < len(dt):
        dt = dt.take(keep)
        rank = rank[keep]
        dt_counts = np.minimum(dt_counts, params.max_dets[-1])
        dt_starts = np.concatenate([[0], np.cumsum(dt_counts)[:-1]]).astype(np.int64)
    gt, gt_keys, gt_starts, gt_counts = _group(gt, n_imgs, by_score=False)
    pairs = _pair_ious(dt, dt_keys, dt_starts, dt_counts, gt, gt_keys, gt_starts, gt_counts, params.iou_type, coco_gt)
    counted, ignored = _match(pairs, dt, gt, params)
    return _accumulate(dt, gt, counted, ignored, rank, params, cat_positions)


def _forked_part(index: int) -> dict[str, np.ndarray]:
    job = _FORKED["jobs"][index]
    return _evaluate_part(_FORKED["dt"], _FORKED["gt"], _FORKED["params"], _FORKED["coco_gt"], job)


def split_categories(dt: Side, gt: Side, n_cats: int, workers: int) -> list[list[int]]:
    """Category positions in ``workers`` sets of about equal work (detections + ground truth), greedily."""
    load = np.bincount(dt.cat, minlength=n_cats) + np.bincount(gt.cat, minlength=n_cats)
    parts: list[list[int]] = [[] for _ in range(workers)]
    totals = [0] * workers
    for k in np.argsort(-load, kind="stable").tolist():
        i = int(np.argmin(totals))
        parts[i].append(k)
        totals[i] += int(load[k])
    return [sorted(p) for p in parts if p]


def evaluate_arrays(coco_gt: Any, dt: Side, gt: Side, params: EvalParams, workers: int = 1) -> dict[str, np.ndarray]:
    """``COCOeval.evaluate()`` + ``accumulate()`` on flat arrays: the ``eval`` dict's three arrays.

    ``workers > 1`` splits the categories over forked processes (none below
    :data:`MIN_PARALLEL_DETECTIONS` detections or for class-agnostic evaluation); the arrays are the same.
    """
    n_k = len(params.cat_ids) if params.use_cats else 1
    workers = max(1, min(workers, n_k))
    if workers == 1 or len(dt) < MIN_PARALLEL_DETECTIONS or not params.use_cats:
        return _evaluate_part(dt, gt, params, coco_gt, range(n_k))
    import multiprocessing

    jobs = split_categories(dt, gt, n_k, workers)
    _FORKED.update(dt=dt, gt=gt, params=params, coco_gt=coco_gt, jobs=jobs)
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(len(jobs) - 1) as pool:
            pending = pool.map_async(_forked_part, range(1, len(jobs)))
            parts = [_forked_part(0)] + pending.get()
    finally:
        _FORKED.clear()
    merged = parts[0]
    for job, part in zip(jobs[1:], parts[1:]):
        merged["precision"][:, :, job] = part["precision"][:, :, job]
        merged["recall"][:, job] = part["recall"][:, job]
        merged["scores"][:, :, job] = part["scores"][:, :, job]
    return merged

