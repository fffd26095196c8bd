"""COCO-style evaluation (pycocotools' rules), and the COCO results-json format.

Detections enter as :class:`~detcli.structures.Detections` in *original* image coordinates (the
data layer's ``map_to_original`` already ran). :func:`detections_to_coco` turns them into the
COCO results format (``image_id``, ``category_id``, ``bbox`` as xywh, ``score``), the one place
where det's xyxy boxes become xywh (and masks RLE) on the way out. :func:`evaluate_coco` evaluates
with det's array engine (:mod:`detcli.evaluation.fast_coco`, the same numbers as pycocotools,
bit for bit) or, on request, ``pycocotools.cocoeval.COCOeval`` itself or faster-coco-eval, and
returns the metrics with MMDetection 2.x names.

pycocotools prints while it works; everything it prints is captured, nothing reaches stdout.
The 12-line summary of ``COCOeval.summarize()`` is returned as text.

Metrics (``metrics`` argument):

- ``bbox``: ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s``, ``bbox_mAP_m``,
  ``bbox_mAP_l`` (``COCOeval.stats[0:6]``).
- ``segm``: ``segm_mAP``, ``segm_mAP_50``, ... the same six on the masks (results entries carry
  ``segmentation`` as COCO RLE, see :mod:`detcli.evaluation.rle`).
- ``proposal``: class-agnostic recall of the boxes (``useCats = 0``, ``maxDets = proposal_nums``):
  ``AR@100``, ``AR@300``, ``AR@1000``, ``AR_s@1000``, ``AR_m@1000``, ``AR_l@1000``
  (``COCOeval.stats[6:12]``).

Values are pycocotools' own floats, unrounded; ``-1.0`` means "no ground truth in that bucket".
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detcli.errors import ConfigError, DatasetError, did_you_mean
from detcli.evaluation.fast_coco import ResultColumns, auto_workers, engine_columns
from detcli.evaluation.rle import EncodedDetections, encode_masks
from detcli.fileio import write_json_atomic
from detcli.structures import Detections, convert

logger = logging.getLogger(__name__)

#: Metrics det evaluates (``segm`` needs a model that predicts masks, or masks in a results file).
SUPPORTED_METRICS: tuple[str, ...] = ("bbox", "segm", "proposal")

#: pycocotools ``iouType`` of each metric.
IOU_TYPES: dict[str, str] = {"bbox": "bbox", "segm": "segm", "proposal": "bbox"}

#: Metrics of results files evaluated without a model (``det eval --gt --dt``): masks come from the file.
FILE_METRICS: tuple[str, ...] = SUPPORTED_METRICS

#: Evaluation engines: det's array engine (default; pycocotools' numbers bit for bit, several times
#: faster than faster-coco-eval), pycocotools itself (the reference), or faster-coco-eval's C++ port
#: (same matching; precision values may differ from pycocotools in the last bit, see :func:`evaluate_coco`).
ENGINES: tuple[str, ...] = ("det", "pycocotools", "faster-coco-eval")

#: Names of ``COCOeval.stats`` entries, per metric, in mmdet 2.x spelling (``{n}`` = proposal_nums).
BBOX_ITEMS: tuple[tuple[str, int], ...] = (
    ("mAP", 0), ("mAP_50", 1), ("mAP_75", 2), ("mAP_s", 3), ("mAP_m", 4), ("mAP_l", 5),
)

#: Decimal places kept in a results json (sub-pixel boxes; scores with enough digits to keep ties rare).
BBOX_DECIMALS = 2
SCORE_DECIMALS = 5


@dataclass(frozen=True)
class ClasswiseAP:
    """AP@[.5:.95] (area all, maxDets 100) of one class.

    Attributes:
        name: class name.
        category_id: COCO category id.
        ap: the AP, or None when the class has no ground truth in the evaluated images ("n/a").
    """

    name: str
    category_id: int
    ap: float | None


@dataclass
class CocoEvaluation:
    """What :func:`evaluate_coco` found.

    Attributes:
        metrics: flat ``{name: value}``: ``bbox_mAP``..., ``AR@100``... (floats, -1.0 = no GT).
        summaries: per metric, the 12-line text of ``COCOeval.summarize()``.
        classwise: per metric (``bbox`` only), the per-class AP rows; empty unless asked for.
        num_images: images evaluated.
        num_detections: result entries evaluated.
        precision: per metric, ``COCOeval.eval['precision']`` ``(T, R, K, A, M)`` when asked for.
        plots: per metric, precision-recall PNGs written (``det eval --plot-dir``).
        stats: per metric, the 12 numbers of ``COCOeval.stats`` (AP x6, AR x6) as floats.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    classwise: dict[str, list[ClasswiseAP]] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    plots: dict[str, list[str]] = field(default_factory=dict)
    stats: dict[str, list[float]] = field(default_factory=dict)


def check_metrics(metrics: str | Sequence[str], supported: Sequence[str] = SUPPORTED_METRICS) -> list[str]:
    """Return ``metrics`` as a list, or raise :class:`ConfigError` listing the supported ones.

    Example:
        >>> check_metrics("bbox")
        ['bbox']
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ConfigError(f"no metric given (supported: {', '.join(supported)})")
    for name in names:
        if name not in supported:
            hint = did_you_mean(name, supported)
            raise ConfigError(
                f"metric '{name}' is not supported{hint} (supported: {', '.join(supported)})"
            )
    return names


def detections_to_coco(
    detections: Sequence[Detections | EncodedDetections],
    image_ids: Sequence[int],
    cat_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """Turn per-image detections into COCO results entries.

    Args:
        detections: one :class:`Detections` (or :class:`~detcli.evaluation.rle.EncodedDetections`) per
            image, boxes ``(N, 4)`` xyxy in original image pixels, labels in ``[0, len(cat_ids))``,
            masks (if any) ``bool (N, H, W)`` at the original image size.
        image_ids: COCO image id of each entry of ``detections``.
        cat_ids: COCO category id of each label (``dataset.cat_ids``).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` in image order, each
        image's detections in their given (score) order; boxes rounded to 2 decimals, scores to 5.
        Detections with masks also carry ``"segmentation": {"size": [H, W], "counts": str}`` (COCO RLE).

    Raises:
        ValueError: lengths differ, or a label has no category id (names the image and label).

    Example:
        >>> import torch
        >>> d = Detections((10, 10), torch.tensor([[1., 2., 4., 6.]]), torch.tensor([0.9]), torch.tensor([0]))
        >>> detections_to_coco([d], [7], [3])
        [{'image_id': 7, 'category_id': 3, 'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.9}]
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection sets but {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for item, image_id in zip(detections, image_ids):
        results.extend(image_results(item, int(image_id), cat_ids))
    return results


def image_results(item: Detections | EncodedDetections, image_id: int, cat_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The COCO results entries of one image (see :func:`detections_to_coco`); masks are encoded here
    when ``item`` still holds dense ones."""
    if isinstance(item, EncodedDetections):
        dets, segms = item.detections, item.segmentations
    else:
        dets, segms = item, None
    if len(dets) == 0:
        return []
    if segms is None and dets.masks is not None:
        segms = encode_masks(dets.masks)
    num_cats = len(cat_ids)
    xywh = convert(dets.boxes.tensor.detach().float().cpu(), "xyxy", "xywh").numpy()  # (N, 4)
    scores = dets.scores.detach().float().cpu().numpy()  # (N,)
    labels = dets.labels.detach().cpu().numpy()  # (N,)
    if labels.min() < 0 or labels.max() >= num_cats:
        bad = int(labels[(labels < 0) | (labels >= num_cats)][0])
        raise ValueError(f"image {image_id}: label {bad} has no category id (the dataset has {num_cats} classes)")
    out = []
    for i, (box, score, label) in enumerate(zip(xywh.tolist(), scores.tolist(), labels.tolist())):
        entry: dict[str, Any] = {
            "image_id": image_id,
            "category_id": int(cat_ids[label]),
            "bbox": [round(v, BBOX_DECIMALS) for v in box],
            "score": round(score, SCORE_DECIMALS),
        }
        if segms is not None:
            entry["segmentation"] = segms[i]
        out.append(entry)
    return out


def write_results_json(results: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write COCO results to ``path`` atomically (a temp file in the same folder, then ``os.replace``)."""
    return write_json_atomic(results, path)


def load_results(coco_gt: Any, results: list[dict[str, Any]], *, owned: bool = False) -> Any:
    """Return a pycocotools ``COCO`` of ``results`` against ``coco_gt``; an empty list works too.

    ``COCO.loadRes`` fails on an empty list; then an empty results object with the ground truth's
    images and categories is built instead, which ``COCOeval`` scores as AP 0 for every class that
    has ground truth. ``results`` is not modified (``loadRes`` would add keys to its entries) unless
    ``owned`` (the caller parsed them and does not reuse them: no copy is made).
    """
    bad = _first_unknown_image(coco_gt, results)
    if bad is not None:
        raise _unknown_image_error(bad, results[bad].get("image_id"))
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            return coco_gt.loadRes(results if owned else [dict(r) for r in results])  # loadRes only adds or replaces top-level keys
        empty = type(coco_gt)()
        empty.dataset = {
            "images": list(coco_gt.dataset.get("images", [])),
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        empty.createIndex()
        return empty


def evaluate_coco(
    coco_gt: Any,
    results: list[dict[str, Any]] | ResultColumns,
    metrics: str | Sequence[str] = ("bbox",),
    *,
    classwise: bool = False,
    proposal_nums: Sequence[int] = (100, 300, 1000),
    iou_thrs: Sequence[float] | None = None,
    cat_ids: Sequence[int] | None = None,
    img_ids: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    engine: str = "det",
    supported: Sequence[str] = SUPPORTED_METRICS,
    keep_precision: bool = False,
    workers: int = 1,
    results_owned: bool = False,
) -> CocoEvaluation:
    """Evaluate COCO results: the numbers of ``pycocotools.cocoeval.COCOeval``.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` ground truth in original image coordinates.
        results: COCO results entries (:func:`detections_to_coco`), or their columns (det engine,
            :class:`~detcli.evaluation.fast_coco.ResultColumns`); may be empty.
        metrics: names from :data:`SUPPORTED_METRICS`.
        classwise: also compute the per-class AP table (``bbox``).
        proposal_nums: ``maxDets`` of the ``proposal`` metric.
        iou_thrs: IoU thresholds; default pycocotools' ``0.50:0.05:0.95``.
        cat_ids: categories to evaluate, in label order (``dataset.cat_ids``); default all of ``coco_gt``.
        img_ids: images to evaluate (``dataset.image_ids``); default all of ``coco_gt``.
        classes: class names aligned with ``cat_ids`` for the classwise table; default the names in ``coco_gt``.
        engine: ``det`` (default: :mod:`detcli.evaluation.fast_coco`, pycocotools' numbers bit for
            bit), ``pycocotools`` (the reference itself) or ``faster-coco-eval`` (its C++
            ``COCOeval_faster``: the same matching about 10x faster; a precision of a class whose
            first detection is its only leading true positive is 1.0 there but ``1 - 2**-52`` in
            pycocotools, so APs can differ by ~1e-16).
        supported: metric names accepted (``FILE_METRICS`` when masks come from a results file).
        keep_precision: keep ``COCOeval.eval['precision']`` per metric in ``CocoEvaluation.precision``.
        workers: processes (fork) that evaluate disjoint sets of categories; the per-category
            arrays are exactly what one process computes (COCOeval's matching and accumulation are
            per category), merged before ``summarize()``. ``proposal`` (class-agnostic) runs in one;
            the ``det`` engine stays in one process for small inputs. 0: automatic (det engine:
            :func:`~detcli.evaluation.fast_coco.auto_workers` for bbox, one process for segm; other
            engines: one per available core).
        results_owned: ``results`` may be modified (``loadRes`` adds keys); saves a copy of each entry.

    Returns:
        :class:`CocoEvaluation`.

    Raises:
        ConfigError: an unsupported metric (the message lists the supported ones).
        DatasetError: a result refers to an image that is not in the ground truth.
    """
    names = check_metrics(metrics, supported)
    if engine not in ENGINES:
        raise ConfigError(f"evaluation engine '{engine}' is unknown{did_you_mean(engine, ENGINES)} (choose: {', '.join(ENGINES)})")
    if isinstance(results, ResultColumns) and engine != "det":
        raise ValueError("results as columns are read by the det engine only")
    if engine != "det" and workers <= 0:
        workers = len(os.sched_getaffinity(0))
    if engine == "det":
        return _evaluate_det(coco_gt, results, names, classwise=classwise, proposal_nums=proposal_nums,
                             iou_thrs=iou_thrs, cat_ids=cat_ids, img_ids=img_ids, classes=classes,
                             keep_precision=keep_precision, workers=workers)
    if engine == "faster-coco-eval":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster as COCOeval

        fast_gt = FasterCOCO()
        fast_gt.dataset = coco_gt.dataset
        with contextlib.redirect_stdout(io.StringIO()):
            fast_gt.createIndex()
        coco_gt = fast_gt
    else:
        from pycocotools.cocoeval import COCOeval

    cat_ids, img_ids, classes = _ids_and_classes(coco_gt, cat_ids, img_ids, classes)
    coco_dt = load_results(coco_gt, results, owned=results_owned)  # type: ignore[arg-type]
    out = CocoEvaluation(num_images=len(img_ids), num_detections=len(results))
    if not results:
        logger.warning("the results hold no detection at all: every AP is 0 for classes with ground truth")
    for name in names:
        cocoeval = COCOeval(coco_gt, coco_dt, IOU_TYPES[name])
        if engine == "faster-coco-eval":
            cocoeval.print_function = lambda *a, **k: None
        cocoeval.params.catIds = cat_ids
        cocoeval.params.imgIds = img_ids
        if iou_thrs is not None:
            cocoeval.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        if name == "proposal":
            cocoeval.params.useCats = 0
            cocoeval.params.maxDets = [int(n) for n in proposal_nums]
        if workers > 1 and name != "proposal" and len(set(cat_ids)) > 1:
            _evaluate_by_category(cocoeval, workers)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                cocoeval.evaluate()
                cocoeval.accumulate()
        _summarize(out, name, cocoeval, proposal_nums, cat_ids, classes, classwise, keep_precision)
    return out


def _ids_and_classes(coco_gt: Any, cat_ids: Sequence[int] | None, img_ids: Sequence[int] | None,
                     classes: Sequence[str] | None) -> tuple[list[int], list[int], Sequence[str]]:
    cat_ids = list(coco_gt.getCatIds()) if cat_ids is None else list(cat_ids)
    img_ids = list(coco_gt.getImgIds()) if img_ids is None else list(img_ids)
    if classes is None:
        classes = [coco_gt.loadCats(c)[0]["name"] for c in cat_ids]
    if len(classes) != len(cat_ids):
        raise ValueError(f"{len(classes)} class names but {len(cat_ids)} category ids")
    return cat_ids, img_ids, classes


def _summarize(out: CocoEvaluation, name: str, cocoeval: Any, proposal_nums: Sequence[int], cat_ids: Sequence[int],
               classes: Sequence[str], classwise: bool, keep_precision: bool) -> None:
    """Run ``cocoeval.summarize()`` (stdout captured) and put its numbers in ``out`` with mmdet names."""
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        cocoeval.summarize()
    out.summaries[name] = summary.getvalue().rstrip("\n")
    stats = cocoeval.stats
    out.stats[name] = [float(v) for v in stats]
    if name == "proposal":
        nums = [int(n) for n in proposal_nums]
        largest = nums[-1]
        keys = [f"AR@{n}" for n in nums] + [f"AR_s@{largest}", f"AR_m@{largest}", f"AR_l@{largest}"]
        for key, index in zip(keys, range(6, 12)):
            out.metrics[key] = float(stats[index])
        return
    for item, index in BBOX_ITEMS:
        out.metrics[f"{name}_{item}"] = float(stats[index])
    if classwise:
        out.classwise[name] = _classwise(cocoeval.eval["precision"], cat_ids, classes)
    if keep_precision:
        out.precision[name] = np.asarray(cocoeval.eval["precision"])


def _evaluate_det(
    coco_gt: Any,
    results: list[dict[str, Any]] | ResultColumns,
    names: Sequence[str],
    *,
    classwise: bool,
    proposal_nums: Sequence[int],
    iou_thrs: Sequence[float] | None,
    cat_ids: Sequence[int] | None,
    img_ids: Sequence[int] | None,
    classes: Sequence[str] | None,
    keep_precision: bool,
    workers: int,
) -> CocoEvaluation:
    """:func:`evaluate_coco` with det's array engine (:mod:`detcli.evaluation.fast_coco`); pycocotools
    only summarizes, so the 12 numbers come out of the same ``summarize()``."""
    from pycocotools.cocoeval import COCOeval

    from detcli.evaluation.fast_coco import EvalParams, evaluate_arrays, ground_truth_side, results_side

    cat_ids, img_ids, classes = _ids_and_classes(coco_gt, cat_ids, img_ids, classes)
    columns = _checked_columns(coco_gt, results, names)
    out = CocoEvaluation(num_images=len(img_ids), num_detections=len(results))
    if not results:
        logger.warning("the results hold no detection at all: every AP is 0 for classes with ground truth")
    for name in names:
        cocoeval = COCOeval(iouType=IOU_TYPES[name])
        p = cocoeval.params
        p.imgIds = [int(i) for i in np.unique(np.asarray(img_ids, np.int64))]
        p.catIds = [int(c) for c in np.unique(np.asarray(cat_ids, np.int64))]
        if iou_thrs is not None:
            p.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        if name == "proposal":
            p.useCats = 0
            p.maxDets = [int(n) for n in proposal_nums]
        p.maxDets = sorted(p.maxDets)
        params = EvalParams(img_ids=p.imgIds, cat_ids=p.catIds, iou_thrs=np.asarray(p.iouThrs), rec_thrs=np.asarray(p.recThrs),
                            max_dets=list(p.maxDets), area_rngs=[list(a) for a in p.areaRng], use_cats=bool(p.useCats),
                            iou_type=IOU_TYPES[name])
        processes = workers if workers > 0 else (1 if name == "segm" else auto_workers())
        arrays = evaluate_arrays(coco_gt, results_side(coco_gt, columns, params), ground_truth_side(coco_gt, params),
                                 params, workers=processes)
        n_k = len(p.catIds) if p.useCats else 1
        cocoeval.eval = {"params": p, "counts": [len(p.iouThrs), len(p.recThrs), n_k, len(p.areaRng), len(p.maxDets)],
                         **arrays}
        _summarize(out, name, cocoeval, proposal_nums, cat_ids, classes, classwise, keep_precision)
    return out


def _checked_columns(coco_gt: Any, results: Sequence[dict[str, Any]] | ResultColumns, names: Sequence[str]) -> ResultColumns:
    """``results`` as columns, read once for every metric in ``names``, after checking that their
    images are in the ground truth (an unknown image is reported before a malformed entry)."""
    if isinstance(results, ResultColumns):
        _check_result_images(coco_gt, results)
        return results
    try:
        columns = engine_columns(results, "segm" in names)
    except Exception:
        _check_result_images(coco_gt, results)
        raise
    _check_result_images(coco_gt, columns)
    return columns


def ids_known(coco_gt: Any, image_ids: np.ndarray, category_ids: np.ndarray | None = None) -> np.ndarray:
    """Bool ``(N,)``: whether each result's image id (and category id, when given) is one of the
    ground truth's (int64 ids; the check every results reader makes before evaluating)."""
    known = np.isin(image_ids, np.asarray(sorted(coco_gt.getImgIds()), np.int64))
    if category_ids is not None:
        known &= np.isin(category_ids, np.asarray(sorted(coco_gt.getCatIds()), np.int64))
    return known


def _first_unknown_image(coco_gt: Any, results: Sequence[dict[str, Any]]) -> int | None:
    """Index of the first results entry whose ``image_id`` (compared as a Python value) is not an
    image of the ground truth, or None."""
    image_ids = set(coco_gt.getImgIds())
    return next((i for i, r in enumerate(results) if r.get("image_id") not in image_ids), None)


def _unknown_image_error(index: int, image_id: Any) -> DatasetError:
    return DatasetError(
        f"result {index}: image_id {image_id!r} is not an image of the ground truth "
        "(were the results made on another dataset or split?)"
    )


def _check_result_images(coco_gt: Any, results: Sequence[dict[str, Any]] | ResultColumns) -> None:
    """Raise :class:`DatasetError` naming the first result whose image is not in the ground truth."""
    if not len(results):
        return
    try:
        if isinstance(results, ResultColumns):
            ids = results.image_id
        else:
            ids = np.fromiter((r["image_id"] for r in results), np.int64, len(results))
    except (KeyError, TypeError, ValueError, OverflowError):
        bad = _first_unknown_image(coco_gt, results)  # type: ignore[arg-type]
    else:
        ok = ids_known(coco_gt, ids)
        bad = None if ok.all() else int(np.flatnonzero(~ok)[0])
    if bad is not None:
        bad_id = int(results.image_id[bad]) if isinstance(results, ResultColumns) else results[bad].get("image_id")
        raise _unknown_image_error(bad, bad_id)


_FORKED: dict[str, Any] = {}


def _evaluate_chunk(index: int) -> dict[str, np.ndarray]:
    cocoeval = _FORKED["chunks"][index]
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval.evaluate()
        cocoeval.accumulate()
    return {key: np.asarray(cocoeval.eval[key]) for key in ("precision", "recall", "scores")}


def _evaluate_by_category(cocoeval: Any, workers: int) -> None:
    """Evaluate+accumulate ``cocoeval`` in ``workers`` forked processes, each on every
    ``workers``-th category (sorted, as COCOeval orders them), and put the merged arrays in
    ``cocoeval.eval`` ready for ``summarize()``."""
    import multiprocessing

    params = cocoeval.params
    cat_ids = sorted(set(int(c) for c in params.catIds))
    workers = min(workers, len(cat_ids))
    chunks = []
    for i in range(workers):
        part = copy.copy(cocoeval)
        part.params = copy.deepcopy(params)
        part.params.catIds = cat_ids[i::workers]
        chunks.append(part)
    _FORKED["chunks"] = chunks
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_evaluate_chunk, range(workers))
    finally:
        _FORKED.clear()
    merged: dict[str, np.ndarray] = {}
    for key, axis in (("precision", 2), ("recall", 1), ("scores", 2)):
        shape = list(parts[0][key].shape)
        shape[axis] = len(cat_ids)
        out = np.empty(shape, dtype=parts[0][key].dtype)
        for i, part in enumerate(parts):
            index = [slice(None)] * len(shape)
            index[axis] = slice(i, None, workers)
            out[tuple(index)] = part[key]
        merged[key] = out
    params.catIds = cat_ids
    params.imgIds = list(np.unique(params.imgIds))
    params.maxDets = sorted(params.maxDets)
    cocoeval.eval = {"params": params, "counts": list(merged["precision"].shape), **merged}
    cocoeval.matched = False  # faster-coco-eval's summarize() reads it


def _classwise(precision: np.ndarray, cat_ids: Sequence[int], classes: Sequence[str]) -> list[ClasswiseAP]:
    """Per-class AP from ``precision (T, R, K, A, M)``: area 'all' (index 0), the largest maxDets (-1).

    COCOeval orders ``K`` by sorted category id; rows come out in the order of ``cat_ids``.
    """
    position = {int(c): k for k, c in enumerate(sorted(set(int(c) for c in cat_ids)))}
    rows = []
    for cat_id, name in zip(cat_ids, classes):
        p = precision[:, :, position[int(cat_id)], 0, -1]  # (T, R)
        p = p[p > -1]
        rows.append(ClasswiseAP(str(name), int(cat_id), float(np.mean(p)) if p.size else None))
    return rows


def format_classwise_table(rows: Sequence[ClasswiseAP]) -> str:
    """Render classwise rows as a plain two-column text table; a class without GT shows ``n/a``.

    Example:
        >>> print(format_classwise_table([ClasswiseAP("circle", 1, 0.5), ClasswiseAP("star", 2, None)]))
        category | AP
        ---------+------
        circle   | 0.500
        star     | n/a
    """
    width = max([len("category")] + [len(r.name) for r in rows])
    lines = [f"{'category':<{width}} | AP", f"{'-' * width}-+------"]
    for r in rows:
        lines.append(f"{r.name:<{width}} | {'n/a' if r.ap is None else f'{r.ap:.3f}'}")
    return "\n".join(lines)
