"""Testing: load a checkpoint, run the model over a dataset, write and evaluate COCO results.

``det test`` has two modes, one function each: ``det test [PRESET] CKPT`` calls :func:`test` (with the config
of :func:`resolve_test_config`), ``det test --gt ANN.json --dt RESULTS.json`` calls :func:`evaluate_results_file`.
Training's EvalHook shares :func:`run_inference` (models and datasets come from :mod:`detcli.engine.builders`).

The test loop (mmdet semantics): a dataset in test mode returns ``list[Sample]`` per index, one
per test-time view. Each view batch goes through ``model.predict`` (detections in the input's
resized coordinates), then ``detcli.data.map_to_original`` (undo flip and resize, clip to the
original image). Several views of one image are merged by concatenation and class-aware NMS with
the model's ``test_cfg`` (``nms.iou_threshold``, ``max_per_img``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detcli.engine import runlock
from detcli.engine.builders import build_split, load_checkpoint_config, load_predictor
from detcli.engine.dist import distributed, gather_results, get_dist_info, run_on_main
from detcli.engine.evaluation import ALL_METRICS, Evaluation, evaluate_dataset, resolve_evaluation
from detcli.engine.hooks import check_num_classes
from detcli.engine.progress import ProgressCallback, ProgressEvent
from detcli.errors import ConfigError, DetError
from detcli.evaluation import (
    ClasswiseAP,
    CocoEvaluation,
    check_metrics,
    detections_to_coco,
    evaluate_files,
    format_classwise_table,
    write_results_json,
)
from detcli.evaluation.rle import EncodedDetections, compact
from detcli.evaluation.voc import MapTable
from detcli.fileio import check_writable_dir, check_writable_file
from detcli.ops import batched_nms
from detcli.structures import Detections

logger = logging.getLogger(__name__)


@dataclass
class TestResult:
    """What :func:`test` did.

    Attributes:
        metrics: ``bbox_mAP``, ``bbox_mAP_50``, ``bbox_mAP_75``, ``bbox_mAP_s``, ``bbox_mAP_m``,
            ``bbox_mAP_l`` (and ``AR@100``... with ``proposal``; ``mAP``, ``AP50``... with ``mAP``;
            ``recall@100@0.5``... with ``recall``); empty with ``format_only``.
        summary: pycocotools' 12-line summary (one block per metric, blank line between).
        summaries: the same per metric.
        classwise: per-class AP rows of the first bbox/segm metric (``ap`` None = no ground truth,
            shown ``n/a``); empty unless asked.
        classwise_table: the per-class rows as a plain text table (one per metric, titled, when
            several metrics were evaluated).
        num_images: images tested.
        num_detections: detections written/evaluated.
        out: the results json written, or None.
        show_dir: the folder of drawn images, or None.
        checkpoint: the checkpoint tested.
        rank: this process's rank (0 without a launcher); world_size: the number of processes.
        map_tables: with ``mAP``, the per-class tables (class, gts, dets, recall, ap) per IoU
            threshold and scale range, keyed by metric prefix (``""``, or ``"0_"``... per sub-dataset).
    """

    metrics: dict[str, float]
    summary: str
    summaries: dict[str, str]
    classwise: list[ClasswiseAP]
    classwise_table: str
    num_images: int
    num_detections: int
    out: Path | None
    show_dir: Path | None
    checkpoint: Path
    rank: int = 0
    world_size: int = 1
    map_tables: dict[str, list[MapTable]] = field(default_factory=dict)
    classwise_by_metric: dict[str, list[ClasswiseAP]] = field(default_factory=dict)


# --------------------------------------------------------------------------- inference


def _test_nms(cfg: Mapping[str, Any] | None) -> tuple[float, int]:
    test_cfg = dict((cfg or {}).get("model", {}).get("test_cfg") or {})
    nms = dict(test_cfg.get("nms") or {})
    return float(nms.get("iou_threshold", nms.get("iou_thr", 0.5))), int(test_cfg.get("max_per_img", 100))  # type: ignore[arg-type]


def merge_views(views: Sequence[Detections], iou_threshold: float, max_per_img: int) -> Detections:
    """Merge detections of several test-time views of one image (already in original coordinates).

    Args:
        views: per view, detections with boxes ``(N_v, 4)`` xyxy in original pixels.
        iou_threshold: class-aware NMS threshold (``test_cfg.nms.iou_threshold``).
        max_per_img: keep at most this many (``test_cfg.max_per_img``; ``<= 0``: all).

    Returns:
        One :class:`Detections`, sorted by score.
    """
    if len(views) == 1:
        return views[0]
    merged = Detections.cat(list(views))
    if len(merged) == 0:
        return merged
    keep = batched_nms(merged.boxes.tensor, merged.scores, merged.labels, iou_threshold)  # (K,)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    return merged[keep]


def postprocess_batch(preds: Sequence[Detections], batch: Any, cfg: Mapping[str, Any] | None) -> list[Detections]:
    """One :class:`Detections` per source image of a test-mode ``batch`` (:class:`detcli.data.Batch`).

    Each view's predictions are mapped back to the original image's pixels (on the CPU), then the
    test-time views of an image are merged by :func:`merge_views` with ``cfg``'s ``model.test_cfg``.
    """
    from detcli.data import map_to_original

    iou_threshold, max_per_img = _test_nms(cfg)
    mapped = [map_to_original(p.to("cpu"), meta) for p, meta in zip(preds, batch.metas)]
    return [merge_views(mapped[group], iou_threshold, max_per_img) for group in batch.groups()]


@torch.inference_mode()
def run_inference(
    model: nn.Module,
    dataset: Any,
    *,
    samples_per_gpu: int = 1,
    workers_per_gpu: int = 0,
    device: torch.device | str = "cpu",
    cfg: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    phase: str = "test",
    epoch: int = 0,
    encode_masks: bool = False,
) -> list[Detections | EncodedDetections]:
    """Predict every image of a test-mode dataset, in dataset order, in original image coordinates.

    Args:
        model: detector in eval mode.
        dataset: test-mode dataset (``dataset[i] -> list[Sample]``).
        samples_per_gpu: images per forward pass.
        workers_per_gpu: DataLoader worker processes.
        device: where the model runs.
        cfg: the config (its ``model.test_cfg`` merges test-time-augmented views).
        progress: receives a ``phase`` event per batch.
        encode_masks: hold each image's masks as COCO RLE (:class:`EncodedDetections`) as soon as
            the image is done, so a dataset's worth of full-size masks never sits in memory.

    Returns:
        One :class:`Detections` per dataset index (boxes ``(N, 4)`` xyxy in original pixels), or with
        ``encode_masks`` an :class:`EncodedDetections` for images whose detections have masks.
    """
    from detcli.data import build_dataloader

    dev = torch.device(device)
    rank, world_size = get_dist_info()
    loader = build_dataloader(dataset, samples_per_gpu, workers_per_gpu, shuffle=False,
                              num_replicas=world_size, rank=rank)
    results: list[Detections | EncodedDetections] = []
    total = len(loader.sampler)  # type: ignore[arg-type]
    start = time.perf_counter()
    for batch in loader:  # test mode: every image contributes batch.num_augs[k] views
        preds = model.predict(batch.images.to(dev, non_blocking=True))  # type: ignore[operator]
        for merged in postprocess_batch(preds, batch, cfg):
            results.append(compact(merged) if encode_masks else merged)
        if progress is not None:
            done = min(len(results), total)
            elapsed = time.perf_counter() - start
            progress(ProgressEvent(phase=phase, epoch=epoch, iter=done, max=total,
                                   eta=elapsed / done * (total - done) if done else None))
    return gather_results(results, len(dataset))


def predicts_masks(model: nn.Module) -> bool:
    """Whether ``model`` predicts instance masks (``with_mask`` on the detector or its ``roi_head``)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if bool(getattr(model, "with_mask", False)):
        return True
    return bool(getattr(getattr(model, "roi_head", None), "with_mask", False))


def check_mask_metrics(model: nn.Module, metrics: Sequence[str]) -> None:
    """Raise :class:`ConfigError` when ``segm`` is asked of a model without a mask branch."""
    if "segm" in metrics and not predicts_masks(model):
        name = type(getattr(model, "module", model)).__name__
        raise ConfigError(
            f"metric 'segm' needs instance masks, but the model ({name}) predicts boxes only; "
            "use a model with a mask branch (e.g. MaskRCNN) or drop segm from the metrics"
        )


def _check_segm_results(detections: Sequence[Detections | EncodedDetections], metrics: Sequence[str],
                        model_type: str) -> None:
    if "segm" not in metrics:
        return
    for item in detections:
        if isinstance(item, Detections) and len(item) and item.masks is None:
            raise ConfigError(f"metric 'segm' needs instance masks, but the model ({model_type}) returned detections without masks")


def evaluate_detections(
    dataset: Any,
    detections: Sequence[Detections | EncodedDetections],
    metrics: Sequence[str] = ("bbox",),
    options: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Evaluate detections (original coordinates, dataset order) with the dataset's metrics
    (:func:`detcli.engine.evaluation.evaluate_dataset`: COCO ``bbox``/``segm``/``proposal``, VOC ``mAP``/``recall``)."""
    _check_segm_results(detections, metrics, "the model")
    return evaluate_dataset(dataset, detections, metrics, options)


# --------------------------------------------------------------------------- det test


def resolve_test_config(
    checkpoint: str,
    preset: str | os.PathLike[str] | None = None,
    cfg_options: Sequence[str] | None = None,
    backend: str = "pytorch",
) -> dict[str, Any] | None:
    """The config ``det test [PRESET] CHECKPOINT`` passes to :func:`test`.

    Args:
        checkpoint: the checkpoint (or with ``backend="onnxruntime"`` the exported model) to test.
        preset: a preset name or file; its config (with ``cfg_options``) is used.
        cfg_options: ``a.b.c=V`` overrides; without a preset they apply to the config stored in ``checkpoint``.
        backend: ``pytorch`` or ``onnxruntime`` (where the stored config is read from).

    Returns:
        The resolved config, or None (no preset, no overrides: :func:`test` uses the checkpoint's own).

    Raises:
        ConfigError: an unknown preset, a bad override or a config that fails the schema.
        CheckpointError: without a preset, a checkpoint whose config cannot be read.
    """
    from detcli.config import apply_overrides, check_schema, load_config, resolve_preset_path

    if preset is not None:
        return load_config(str(resolve_preset_path(preset)), cfg_options)
    if not cfg_options:
        return None
    if backend == "onnxruntime":
        from detcli.engine.onnx_export import load_onnx_config

        stored = load_onnx_config(checkpoint)
    else:
        stored = load_checkpoint_config(checkpoint)
    cfg = apply_overrides(stored, cfg_options)
    check_schema(cfg, checkpoint)
    return cfg


def evaluate_results_file(
    gt: str | os.PathLike[str],
    dt: str | os.PathLike[str],
    metrics: Sequence[str] | None = None,
    *,
    classwise: bool = False,
    engine: str = "det",
    plot_dir: str | os.PathLike[str] | None = None,
    workers: int = 0,
) -> CocoEvaluation:
    """``det test --gt ANN.json --dt RESULTS.json``: evaluate a COCO results file, no preset or model.

    Args:
        gt: the COCO annotation file.
        dt: the results file (as :func:`test` writes with ``out``; ``-`` reads stdin).
        metrics: ``bbox``, ``segm``, ``proposal``; None: ``bbox``.
        classwise: add the per-class AP rows.
        engine: ``det``, ``pycocotools`` or ``faster-coco-eval``.
        plot_dir: write per-class precision-recall PNGs here (checked writable before the evaluation).
        workers: processes sharing the work (0: automatic); the numbers do not depend on it.

    Raises:
        OutputError: ``plot_dir`` cannot be written.
        DatasetError: a file is missing, not JSON, of the wrong kind, or refers to unknown images/categories.
        ConfigError: an unsupported metric or engine.
    """
    if plot_dir is not None:
        check_writable_dir(plot_dir, "folder of the precision-recall plots (--plot-dir)")  # before the evaluation
    return evaluate_files(gt, dt, list(metrics or ["bbox"]), classwise=classwise, engine=engine, plot_dir=plot_dir,
                          workers=workers)


def test(
    cfg: Mapping[str, Any] | None,
    checkpoint: str,
    *,
    metrics: Sequence[str] | None = None,
    eval_options: Mapping[str, Any] | None = None,
    out: str | None = None,
    format_only: bool = False,
    show_dir: str | None = None,
    show_score_thr: float = 0.3,
    classwise: bool = False,
    device: str = "cpu",
    progress: ProgressCallback | None = None,
    launcher: str = "auto",
    backend: str = "pytorch",
) -> TestResult:
    """Test a checkpoint on ``data.test``: COCO results json and/or the dataset's metrics.

    Under a launcher (``launcher``: ``auto``, ``none``, ``pytorch``/``torchrun``, ``slurm``; see
    :func:`detcli.engine.dist.distributed`) every rank predicts its share of the images, the
    detections are gathered into dataset order and rank 0 alone evaluates, writes ``out`` and
    ``show_dir``; every rank returns the same metrics.

    Args:
        cfg: the resolved config; None uses the config stored in the checkpoint.
        checkpoint: a det checkpoint, or with ``backend="onnxruntime"`` a model written by
            ``det export-onnx`` (run by ONNX Runtime on the CPU).
        metrics: ``bbox``, ``segm`` (a model with masks), ``proposal``, ``mAP``, ``recall`` (what the dataset supports, see
            :func:`detcli.engine.evaluation.dataset_metrics`); None: the config's ``evaluation.metric``,
            else the dataset's default (``mAP`` for VOC, ``bbox`` otherwise).
        eval_options: evaluation options over the config's ``evaluation`` section (``iou_thr``,
            ``scale_ranges``, ``eval_mode``, ``iou_thrs``, ``proposal_nums``, ``classwise``).
        out: write the COCO results json here (atomically).
        format_only: only write ``out``; no evaluation (``out`` required).
        show_dir: write images with detections drawn above ``show_score_thr`` here.
        classwise: add the per-class AP table.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        progress: receives ``test`` progress events (rank 0 only).
        launcher: how the processes were started (default: torchrun's variables when set).
        backend: ``pytorch`` or ``onnxruntime``.

    Raises:
        ConfigError: a metric or option the dataset does not support (listing the valid ones), an
            unknown backend, ``format_only`` without ``out``, no ``data.test``,
            ``segm`` asked of a model without masks.
        CheckpointError: not a det checkpoint / weights that do not fit.
    """
    dist_params = dict((cfg or {}).get("dist_params") or {})
    with distributed(launcher, device, backend=dist_params.get("backend")) as rank_device, \
            runlock.output_lock(out, "results file (--out)", enabled=bool(out) and get_dist_info()[0] == 0):
        return _test(cfg, checkpoint, metrics=metrics, eval_options=eval_options, out=out, format_only=format_only, show_dir=show_dir,
                     show_score_thr=show_score_thr, classwise=classwise, device=rank_device, progress=progress,
                     backend=backend)


def _test(
    cfg: Mapping[str, Any] | None,
    checkpoint: str,
    *,
    metrics: Sequence[str] | None,
    eval_options: Mapping[str, Any] | None,
    out: str | None,
    format_only: bool,
    show_dir: str | None,
    show_score_thr: float,
    classwise: bool,
    device: str,
    progress: ProgressCallback | None,
    backend: str,
) -> TestResult:
    """:func:`test` inside the process group (if any)."""
    rank, world_size = get_dist_info()
    if rank != 0:
        progress = None
    else:  # output paths are checked before any work
        if out:
            check_writable_file(out, "results file (--out)")
        if show_dir:
            check_writable_dir(show_dir, "show dir (--show-dir)")
    if format_only and not out:
        raise ConfigError("--format-only needs --out FILE.json (the results would be written nowhere)")
    if metrics is not None and not format_only:
        check_metrics(metrics, ALL_METRICS)  # unknown names fail before the checkpoint is loaded
    loaded = load_predictor(checkpoint, cfg, device, backend)
    config = loaded.cfg
    dataset, samples, workers = build_split(config, "test", test_mode=True)
    eval_cfg = dict(config.get("evaluation") or {})
    options = dict(eval_options or {})
    if classwise:
        options["classwise"] = True
    metric_names: list[str] = []
    if not format_only:  # fail before inference on a metric the dataset cannot give
        metric_names, options = resolve_evaluation(dataset, metrics, eval_cfg, options)
    check_num_classes(loaded.model, {"test": dataset})
    if out:
        check_unique_image_ids(dataset)
    if not format_only:
        check_mask_metrics(loaded.model, metric_names)
    if loaded.classes and tuple(loaded.classes) != tuple(dataset.classes):
        logger.warning(
            "the checkpoint was trained on classes %s but data.test has %s: labels are mapped by index",
            list(loaded.classes), list(dataset.classes),
        )
    detections = run_inference(
        loaded.model, dataset, samples_per_gpu=samples, workers_per_gpu=workers,
        device=next(loaded.model.parameters()).device, cfg=config, progress=progress, encode_masks=True,
    )
    if not format_only:
        _check_segm_results(detections, metric_names, type(loaded.model).__name__)
    results = detections_to_coco(detections, dataset.image_ids, dataset.cat_ids)

    def write_and_evaluate() -> tuple[Path | None, Path | None, Evaluation | None]:
        # rank 0 only (run_on_main): files are written once, pycocotools runs once
        out_path = write_results_json(results, out) if out else None
        if out_path is not None:
            logger.info("wrote %d detections of %d images to %s", len(results), len(dataset), out_path)
        shown = _draw(dataset, detections, show_dir, show_score_thr) if show_dir else None
        if format_only:
            return out_path, shown, None
        return out_path, shown, evaluate_dataset(dataset, detections, metric_names, options, results=results)

    out_path, shown, evaluation = run_on_main(write_and_evaluate)
    if evaluation is None:
        return TestResult({}, "", {}, [], "", len(dataset), len(results), out_path, shown, Path(checkpoint),
                          rank, world_size)
    rows = next(iter(evaluation.classwise.values()), [])
    tables = {name: format_classwise_table(r) for name, r in evaluation.classwise.items() if r}
    if len(tables) > 1:
        table = "\n\n".join(f"{name} per class:\n{text}" for name, text in tables.items())
    else:
        table = next(iter(tables.values()), "")
    return TestResult(
        metrics=evaluation.metrics,
        summary="\n\n".join(evaluation.summaries.values()),
        summaries=evaluation.summaries,
        classwise=rows,
        classwise_table=table,
        classwise_by_metric=dict(evaluation.classwise),
        num_images=len(dataset),
        num_detections=len(results),
        out=out_path,
        show_dir=shown,
        checkpoint=Path(checkpoint),
        rank=rank,
        world_size=world_size,
        map_tables=evaluation.map_tables,
    )


def check_unique_image_ids(dataset: Any) -> None:
    """A results file names images by id: refuse (before inference) a dataset whose images share ids,
    as the sub-datasets of a ConcatDataset often do (each numbered from 1)."""
    seen: set[int] = set()
    for image_id in dataset.image_ids:
        if image_id in seen:
            raise ConfigError(f"--out: image id {image_id} occurs more than once in data.test "
                              f"({type(dataset).__name__}), so one results file cannot tell the images apart; "
                              "write results per dataset (set data.test to one of the concatenated datasets per run)")
        seen.add(image_id)


def original_image(dataset: Any, index: int) -> Any:
    """The stored image of ``dataset[index]`` as BGR ``uint8 (H, W, 3)``.

    Uses ``dataset.load_image(index)`` when the dataset has it (synthetic datasets render there),
    else reads ``img_prefix / get_img_info(index)["filename"]`` with OpenCV.
    """
    if hasattr(dataset, "load_image"):
        return dataset.load_image(index)
    import cv2

    from detcli.fileio import read_image_file

    info = dataset.get_img_info(index)
    prefix = getattr(dataset, "img_prefix", None) or ""
    path = Path(prefix) / str(info["filename"])
    try:
        image = read_image_file(path, cv2.IMREAD_COLOR)
    except OSError:
        image = None
    if image is None:
        raise DetError(f"--show-dir: cannot read the image of index {index} ({path})")
    return image


def _draw(dataset: Any, detections: Sequence[Detections | EncodedDetections], show_dir: str, score_thr: float) -> Path:
    """Write one image per test image with its detections above ``score_thr`` drawn."""
    from detcli.visualization import draw_detections, output_name, save_image

    folder = Path(show_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(detections):
        dets = item.decode() if isinstance(item, EncodedDetections) else item  # one image's masks at a time
        drawn = draw_detections(original_image(dataset, index), dets, dataset.classes, score_thr=score_thr)
        fallback = f"{dataset.image_ids[index]}.jpg"
        name = output_name(dataset.get_img_info(index).get("filename", fallback), fallback)
        try:
            save_image(drawn, folder / name)
        except (ValueError, OSError) as e:
            raise DetError(f"--show-dir: could not write {folder / name}: {e}") from e
    return folder
