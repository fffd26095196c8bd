"""Evaluate a dataset's detections with the metrics it supports (mmdet's ``dataset.evaluate``).

Every det dataset has ground truth in two forms: a COCO object (``dataset.coco``) for the COCO
metrics (``bbox``, ``segm``, ``proposal``; pycocotools' numbers) and per-image annotations (``get_ann_info``) for the
VOC metrics (``mAP``, ``recall``; :mod:`detcli.evaluation.voc`), so both families work on both
dataset types. VOCDataset prefers ``mAP`` (with 11-point AP for VOC2007 and VOC-style ``+1``
widths), the others ``bbox``. ``ConcatDataset`` evaluates each sub-dataset on its own with metric
names prefixed by its position (``0_mAP``, ``1_bbox_mAP``), or, with ``separate_eval: false``, all
images as one dataset (``mAP``/``recall`` only). Repeat/ClassBalanced wrappers are for training.

Options (the config's ``evaluation`` section minus the hook's keys, then ``--eval-options``):
``classwise``, ``iou_thrs``, ``proposal_nums`` (COCO); ``iou_thr`` (one or a list),
``scale_ranges``, ``eval_mode``, ``proposal_nums`` (VOC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detcli.errors import ConfigError, did_you_mean
from detcli.evaluation import SUPPORTED_METRICS, ClasswiseAP, detections_to_coco, evaluate_coco
from detcli.evaluation.rle import EncodedDetections
from detcli.evaluation.voc import VOC_METRICS, MapTable, evaluate_voc
from detcli.structures import Detections

#: COCO metrics of a model's detections (:data:`detcli.evaluation.coco.SUPPORTED_METRICS`).
COCO_METRICS: tuple[str, ...] = SUPPORTED_METRICS

#: Every metric ``det test``/validation knows (which ones a dataset supports: :func:`dataset_metrics`).
ALL_METRICS: tuple[str, ...] = COCO_METRICS + VOC_METRICS

#: Keys of the ``evaluation`` section that configure the EvalHook, not the metrics.
HOOK_KEYS: tuple[str, ...] = ("interval", "by_epoch", "start", "save_best", "rule", "metric", "dynamic_intervals")

#: Evaluation options and what they do (``--eval-options KEY=VALUE``, ``evaluation.KEY``).
EVAL_OPTIONS: dict[str, str] = {
    "classwise": "bbox/segm: also compute the per-class AP table (true/false)",
    "iou_thrs": "bbox: IoU thresholds of COCO AP (default 0.50:0.05:0.95)",
    "proposal_nums": "proposal/recall: numbers of boxes per image (default [100, 300, 1000])",
    "iou_thr": "mAP/recall: one IoU threshold or a list (default 0.5)",
    "scale_ranges": "mAP: also AP per [min, max] box side range, e.g. [[0, 32], [32, 96]]",
    "eval_mode": "mAP: area or 11points (default: 11points for VOC2007, else area)",
}


@dataclass
class Evaluation:
    """What :func:`evaluate_dataset` found.

    Attributes:
        metrics: flat ``{name: value}`` (``bbox_mAP``..., ``mAP``, ``AP50``..., prefixed ``0_`` per
            sub-dataset of a separately evaluated ConcatDataset).
        summaries: pycocotools' text summary per (prefixed) COCO metric.
        classwise: per (prefixed) COCO metric, the per-class AP rows (with ``classwise``).
        map_tables: per prefix (``""`` or ``"0_"``...), the per-class VOC tables.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    classwise: dict[str, list[ClasswiseAP]] = field(default_factory=dict)
    map_tables: dict[str, list[MapTable]] = field(default_factory=dict)


def _is_concat(dataset: Any) -> bool:
    from detcli.data.wrappers import ConcatDataset

    return isinstance(dataset, ConcatDataset)


def _is_wrapper(dataset: Any) -> bool:
    from detcli.data.wrappers import DatasetWrapper

    return isinstance(dataset, DatasetWrapper)


def dataset_metrics(dataset: Any) -> tuple[str, ...]:
    """The metrics ``dataset`` can be evaluated with, its preferred (default) one first.

    Example: ``VOCDataset`` → ``("mAP", "recall", "bbox", "proposal")``; ``CocoDataset`` →
    ``("bbox", "proposal", "mAP", "recall")``; ``RepeatDataset`` → ``()``.
    """
    if _is_concat(dataset):
        if not dataset.separate_eval:
            return tuple(m for m in dataset_metrics(dataset.datasets[0]) if m in VOC_METRICS)
        subs = [dataset_metrics(d) for d in dataset.datasets]
        return tuple(m for m in subs[0] if all(m in s for s in subs[1:]))
    if _is_wrapper(dataset):
        return ()
    coco = COCO_METRICS if hasattr(type(dataset), "coco") else ()
    if not getattr(dataset, "has_masks", True):  # e.g. VOC: boxes only, no segm
        coco = tuple(m for m in coco if m != "segm")
    voc = VOC_METRICS if hasattr(dataset, "get_ann_info") else ()
    return voc + coco if getattr(dataset, "eval_mode", None) is not None else coco + voc


def resolve_evaluation(dataset: Any, metrics: str | Sequence[str] | None, eval_cfg: Mapping[str, Any] | None,
                       options: Mapping[str, Any] | None = None) -> tuple[list[str], dict[str, Any]]:
    """Metrics and options to evaluate ``dataset`` with.

    Args:
        metrics: asked for (``--metric``); None: ``eval_cfg['metric']``, else the dataset's default.
        eval_cfg: the config's ``evaluation`` section (hook keys are skipped, the rest are options).
        options: ``--eval-options``, overriding ``eval_cfg``.

    Raises:
        ConfigError: a metric the dataset does not support or an unknown option (the message lists
            the valid ones for this dataset type).
    """
    cfg = dict(eval_cfg or {})
    supported = dataset_metrics(dataset)
    kind = type(dataset).__name__
    if not supported:
        raise ConfigError(f"{kind} cannot be evaluated (mmdet evaluates neither RepeatDataset nor ClassBalancedDataset); "
                          "evaluate the dataset it wraps: put the plain dataset in data.val / data.test")
    if metrics is None:
        metrics = cfg.get("metric") or supported[0]
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ConfigError(f"no metric given (valid for {kind}: {', '.join(supported)})")
    for name in names:
        if name not in supported:
            why = ""
            if _is_concat(dataset) and not dataset.separate_eval and name in COCO_METRICS:
                why = " (a ConcatDataset evaluated as a whole has no single COCO ground truth; set separate_eval: true)"
            same_letters = [m for m in supported if m.lower() == name.lower()]
            hint = f" — did you mean '{same_letters[0]}'?" if same_letters else did_you_mean(name, supported)
            raise ConfigError(f"metric '{name}' is not available for {kind}{hint}{why} "
                              f"(valid for {kind}: {', '.join(supported)})")
    if "recall" in names and "proposal" in names:
        raise ConfigError(f"metrics 'recall' and 'proposal' both report AR@N for {kind}, so one would overwrite the "
                          "other; ask for one of them per run")
    merged = {k: v for k, v in cfg.items() if k not in HOOK_KEYS}
    merged.update(options or {})
    check_eval_options(merged)
    return names, merged


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any) -> list[Any] | None:
    """``v`` as a non-empty list of finite numbers (a single number is a list of one), else None."""
    values = v if isinstance(v, (list, tuple)) else [v]
    return list(values) if values and all(_is_number(x) for x in values) else None


def _eval_option_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the evaluation option ``key`` (None: nothing; None values mean the default)."""
    if value is None:
        return None
    if key == "classwise":
        return None if isinstance(value, bool) else "must be true or false"
    if key in ("iou_thrs", "iou_thr"):
        values = _numbers(value)
        return None if values and all(0 <= x <= 1 for x in values) else "must be an IoU in [0, 1] or a list of them"
    if key == "proposal_nums":
        values = _numbers(value)
        ok = values and all(isinstance(x, int) and x > 0 for x in values)
        return None if ok else "must be a positive integer or a list of them, e.g. [100, 300, 1000]"
    if key == "scale_ranges":
        ok = isinstance(value, (list, tuple)) and value and all(  # type: ignore[assignment]
            isinstance(r, (list, tuple)) and len(r) == 2 and _numbers(list(r)) and r[0] < r[1] for r in value)
        return None if ok else "must be a list of [min, max] box-side ranges, e.g. [[0, 32], [32, 96]]"
    if key == "eval_mode":
        return None if value in ("area", "11points") else "must be area or 11points"
    return None


def check_eval_options(options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` on an unknown evaluation option (listing the known ones) or a value of
    the wrong type or range (before any detection is run)."""
    for key, value in options.items():
        if key not in EVAL_OPTIONS:
            raise ConfigError(f"evaluation option '{key}' is unknown{did_you_mean(key, EVAL_OPTIONS)} "
                              f"(known: {', '.join(EVAL_OPTIONS)})")
        problem = _eval_option_problem(key, value)
        if problem:
            raise ConfigError(f"evaluation option {key}={value!r}: {problem} ({EVAL_OPTIONS[key]})")


def _flat(dets: Detections | EncodedDetections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(dets, EncodedDetections):
        dets = dets.detections
    return (dets.boxes.tensor.detach().float().cpu().numpy().reshape(-1, 4),
            dets.scores.detach().float().cpu().numpy().reshape(-1),
            dets.labels.detach().cpu().numpy().reshape(-1))


def _evaluate_voc(dataset: Any, annotations_of: Any, detections: Sequence[Detections | EncodedDetections], names: list[str],
                  options: Mapping[str, Any]) -> Any:
    return evaluate_voc(
        [_flat(d) for d in detections], [annotations_of(i) for i in range(len(detections))], dataset.classes, names,
        iou_thr=options.get("iou_thr", 0.5), scale_ranges=options.get("scale_ranges"),
        proposal_nums=tuple(options.get("proposal_nums") or (100, 300, 1000)),
        eval_mode=options.get("eval_mode") or getattr(dataset, "eval_mode", None) or "area",
        use_legacy_coordinate=bool(getattr(dataset, "use_legacy_coordinate", False)),
    )


def evaluate_dataset(dataset: Any, detections: Sequence[Detections | EncodedDetections], metrics: Sequence[str],
                     options: Mapping[str, Any] | None = None,
                     results: list[dict[str, Any]] | None = None) -> Evaluation:
    """Evaluate detections (original coordinates, dataset order) on ``dataset``.

    Args:
        dataset: a test-mode dataset (see :func:`dataset_metrics` for what each type supports).
        detections: one :class:`Detections` per dataset index.
        metrics: checked names (:func:`resolve_evaluation`).
        options: evaluation options (:data:`EVAL_OPTIONS`).
        results: ``detections_to_coco(detections, dataset.image_ids, dataset.cat_ids)`` when the caller
            already made them (not modified); None: made here when a COCO metric needs them. A
            ConcatDataset ignores them (each sub-dataset converts its own share).
    """
    opts = dict(options or {})
    if len(detections) != len(dataset):
        raise ValueError(f"{len(detections)} detection sets for a dataset of {len(dataset)} images")
    out = Evaluation()
    if _is_concat(dataset) and dataset.separate_eval:
        for k, (start, end) in enumerate(dataset.ranges()):
            sub = evaluate_dataset(dataset.datasets[k], detections[start:end], metrics, opts)  # its own results
            out.metrics.update({f"{k}_{name}": v for name, v in sub.metrics.items()})
            out.summaries.update({f"{k}_{name}": v for name, v in sub.summaries.items()})
            out.classwise.update({f"{k}_{name}": v for name, v in sub.classwise.items()})
            out.map_tables.update({f"{k}_{p}": v for p, v in sub.map_tables.items()})
        return out
    if _is_wrapper(dataset) and not _is_concat(dataset):
        raise ConfigError(f"{type(dataset).__name__} cannot be evaluated; evaluate the dataset it wraps")
    coco_names = [m for m in metrics if m in COCO_METRICS]
    voc_names = [m for m in metrics if m in VOC_METRICS]
    if coco_names:
        if results is None or _is_concat(dataset):
            results = detections_to_coco(detections, dataset.image_ids, dataset.cat_ids)
        iou_thrs = opts.get("iou_thrs")
        coco = evaluate_coco(
            dataset.coco, results, coco_names, classwise=bool(opts.get("classwise", False)),
            iou_thrs=iou_thrs, proposal_nums=tuple(opts.get("proposal_nums") or (100, 300, 1000)),
            cat_ids=dataset.cat_ids, img_ids=dataset.image_ids, classes=dataset.classes,
        )
        out.metrics.update(coco.metrics)
        out.summaries.update(coco.summaries)
        out.classwise.update(coco.classwise)
    if voc_names:
        if _is_concat(dataset):  # evaluated as one dataset; settings of the first
            voc = _evaluate_voc(dataset.datasets[0], dataset.get_ann_info, detections, voc_names, opts)
        else:
            voc = _evaluate_voc(dataset, dataset.get_ann_info, detections, voc_names, opts)
        out.metrics.update(voc.metrics)
        if voc.tables:
            out.map_tables[""] = voc.tables
    return out
