"""Evaluate a COCO results file against a COCO annotation file, with no preset and no model.

:func:`read_json_file` reads a JSON document from a path or from stdin (``-``), naming the file in
every error. :func:`evaluate_files` checks that the ground truth is an annotation file and the
detections a results list that refers only to the ground truth's images and categories, then runs
:func:`~detcli.evaluation.coco.evaluate_coco`. :func:`plot_pr_curves` draws one precision-recall
curve per class (IoU 0.50, 0.75 and 0.50:0.95 mean; area all; 100 detections).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import sys
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detcli.errors import DatasetError
from detcli.evaluation.coco import FILE_METRICS, CocoEvaluation, evaluate_coco, ids_known
from detcli.evaluation.coco_format import check_coco_types, segmentation_problem
from detcli.evaluation.fast_coco import ResultColumns, auto_workers, result_columns

logger = logging.getLogger(__name__)


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file, or stdin when ``path`` is ``-``; raise :class:`DatasetError` naming it.

    Args:
        path: file path or ``-``.
        what: the option it came from, used in messages (``--gt``, ``--dt``, ``LOG``).
    """
    return parse_json_text(read_text_file(path, what), path, what)


def read_text_file(path: str | os.PathLike[str], what: str) -> str:
    """The text of a file, or of stdin when ``path`` is ``-``; :class:`DatasetError` naming it."""
    name = "stdin" if str(path) == "-" else str(path)
    try:
        if str(path) == "-":
            return sys.stdin.read()
        return Path(path).read_text()
    except FileNotFoundError:
        raise DatasetError(f"{what} {name}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what} {name}: not a JSON text file ({e.__class__.__name__}); pass a .json file") from None


def parse_json_text(text: str, path: str | os.PathLike[str], what: str) -> Any:
    """``json.loads(text)``; a syntax error becomes a :class:`DatasetError` naming the file and position."""
    name = "stdin" if str(path) == "-" else str(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{what} {name}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); pass a COCO .json file"
        ) from None
    except RecursionError:
        raise DatasetError(nesting_message(f"{what} {name}")) from None


def nesting_message(source: str) -> str:
    """The message for a JSON document nested deeper than Python's parser goes (``RecursionError``)."""
    return (f"{source}: JSON nested deeper than the parser's limit (about {sys.getrecursionlimit()} levels; "
            "COCO files need 5); pass a COCO .json file")


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def result_value_problem(entry: dict[str, Any], with_bbox: bool) -> str | None:
    """Why the ``score`` (and, with ``with_bbox`` or when present and non-empty, the ``bbox``) of a COCO
    result entry cannot be evaluated, or None: a score must be a finite number, a bbox ``[x, y, w, h]``
    of 4 finite numbers with ``w, h >= 0`` (strings, nulls, booleans, NaN, infinities and negative sizes are
    refused, never evaluated)."""
    score = entry.get("score")
    if not _finite_number(score):
        return f"score {_shown(score)} is not a finite number (scores are numbers, as `det test --out` writes)"
    bbox = entry.get("bbox")
    if with_bbox or (bbox is not None and bbox != []):
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)):
            return f"bbox {_shown(bbox)} is not [x, y, w, h] of 4 finite numbers"
        if bbox[2] < 0 or bbox[3] < 0:
            return f"bbox {_shown(bbox)} has a negative width or height (COCO boxes are [x, y, w, h] with w, h >= 0)"
    return None


#: Results texts at least this long are parsed in two halves by two processes (det engine, workers > 1).
PARALLEL_JSON_CHARS = 4_000_000

_SPLIT = re.compile(r"\}\s*,\s*\{")
_FORKED_TEXT: dict[str, Any] = {}


def split_json_list(text: str) -> tuple[str, str] | None:
    """Two JSON list texts holding the first and second half of the list ``text`` (split between two
    objects near the middle), or None when ``text`` is not a list. A cut inside a string makes one
    half invalid JSON, which the caller detects when parsing."""
    head = text.lstrip()[:1]
    if head != "[":
        return None
    match = _SPLIT.search(text, len(text) // 2)
    if match is None:
        return None
    return text[: match.start() + 1] + "]", "[" + text[match.end() - 1:]


def _columns_of_text(text: str, with_bbox: bool, with_segm: bool) -> ResultColumns:
    data = json.loads(text)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TypeError("not a list of objects")
    return result_columns(data, with_bbox=with_bbox, with_segm=with_segm)


def _forked_columns(flags: tuple[bool, bool]) -> ResultColumns:
    return _columns_of_text(_FORKED_TEXT["text"], *flags)


def results_columns_of_text(text: str, coco_gt: Any, metrics: Sequence[str], workers: int) -> ResultColumns | None:
    """Parse a results text straight into columns, in two processes when ``workers > 1`` and the text is
    long; None when anything is off (not a list, a missing key, unknown ids...): the caller then
    checks the entries one by one for a precise message."""
    flags = ("bbox" in metrics or "proposal" in metrics, "segm" in metrics)
    # masks would travel back from the second process as Python objects, which costs what the split saves
    halves = split_json_list(text) if workers > 1 and not flags[1] and len(text) >= PARALLEL_JSON_CHARS else None
    try:
        if halves is None:
            columns = _columns_of_text(text, *flags)
        else:
            import multiprocessing

            _FORKED_TEXT["text"] = halves[1]
            try:
                with multiprocessing.get_context("fork").Pool(1) as pool:
                    second = pool.apply_async(_forked_columns, (flags,))
                    first = _columns_of_text(halves[0], *flags)
                    columns = ResultColumns.cat([first, second.get()])
            finally:
                _FORKED_TEXT.clear()
    except (ValueError, TypeError, KeyError, OverflowError, AttributeError, RecursionError):
        return None
    if not np.isfinite(columns.score).all() or (columns.bbox is not None and not np.isfinite(columns.bbox).all()):
        return None
    if columns.bbox is not None and len(columns.bbox) and (columns.bbox[:, 2:] < 0).any():
        return None  # check_results names the entry
    if not ids_known(coco_gt, columns.image_id, columns.category_id).all():
        return None
    if columns.segmentation is not None:
        for i, seg in zip(columns.image_id.tolist(), columns.segmentation):
            img = coco_gt.imgs[int(i)]
            if segmentation_problem(seg, img.get("height"), img.get("width")) is not None:
                return None  # check_results names the entry
        columns.segmentation = [
            seg if isinstance(seg, dict) and isinstance(seg.get("counts"), str)
            else _polygons_to_rle({"image_id": int(i), "segmentation": seg}, coco_gt)["segmentation"]
            for i, seg in zip(columns.image_id.tolist(), columns.segmentation)
        ]
    return columns


def load_ground_truth(path: str | os.PathLike[str]) -> Any:
    """Return a pycocotools ``COCO`` of an annotation file, checking it is one."""
    from pycocotools.coco import COCO

    data = read_json_file(path, "--gt")
    if isinstance(data, list):
        raise DatasetError(
            f"--gt {path}: this is a list, like a results file; --gt takes the COCO annotation file "
            "(a dict with images, annotations, categories) and --dt the results"
        )
    if not isinstance(data, dict):
        raise DatasetError(f"--gt {path}: expected a COCO annotation dict, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetError(f"--gt {path}: not a COCO annotation file: missing key(s) {', '.join(missing)}")
    check_coco_types(data, f"--gt {path}", also_required={"annotations": ("bbox", "area")})
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)  # optional in COCO files; pycocotools' evaluation reads it
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_results(results: Any, coco_gt: Any, metrics: Sequence[str], source: str) -> list[dict[str, Any]]:
    """Check a results list against the ground truth; raise :class:`DatasetError` naming the entry."""
    if isinstance(results, dict):
        if "images" in results and "annotations" in results:
            raise DatasetError(
                f"--dt {source}: this is a COCO annotation file (ground truth), not results; "
                "pass it as --gt and the detections (a JSON list, as `det test --out` writes) as --dt"
            )
        raise DatasetError(f"--dt {source}: expected a JSON list of results, got an object with keys {sorted(results)[:5]}")
    if not isinstance(results, list):
        raise DatasetError(f"--dt {source}: expected a JSON list of results, got {type(results).__name__}")
    if not _results_look_valid(results, coco_gt, metrics):
        _find_bad_result(results, coco_gt, metrics, source)
    if "segm" in metrics:
        converted = []
        for i, r in enumerate(results):
            img = coco_gt.imgs[r["image_id"]]
            problem = segmentation_problem(r["segmentation"], img.get("height"), img.get("width"))
            if problem is not None:
                raise DatasetError(f"--dt {source}: entry {i}: segmentation {problem}")
            converted.append(_polygons_to_rle(r, coco_gt))
        results = converted
    return results


def _needs_bbox(results: list[Any], metrics: Sequence[str]) -> bool:
    """Whether every entry needs a ``bbox``: for bbox/proposal metrics, and whenever the first entry has a
    non-empty one (pycocotools' ``loadRes`` reads every entry as a box result then, whatever the metric)."""
    first = results[0] if results else None
    return "bbox" in metrics or "proposal" in metrics or (
        isinstance(first, dict) and "bbox" in first and first["bbox"] != [])


def _results_look_valid(results: list[Any], coco_gt: Any, metrics: Sequence[str]) -> bool:
    """Fast whole-list check (arrays, no per-entry Python set work); False sends the caller to
    :func:`_find_bad_result` for the message."""
    if not results:
        return True
    keys = ["image_id", "category_id", "score"]
    if _needs_bbox(results, metrics):
        keys.append("bbox")
    if "segm" in metrics:
        keys.append("segmentation")
    try:
        for key in keys:
            if not all(key in r for r in results):
                return False
        n = len(results)
        img = np.fromiter((r["image_id"] for r in results), np.int64, n)
        cat = np.fromiter((r["category_id"] for r in results), np.int64, n)
        scores = np.array([r["score"] for r in results])  # strings, nulls: not a float array
        if scores.shape != (n,) or scores.dtype.kind not in "iuf" or not np.isfinite(scores).all():
            return False
        if "bbox" in keys:
            boxes = np.array([r["bbox"] for r in results])
            if boxes.shape != (n, 4) or boxes.dtype.kind not in "iuf" or not np.isfinite(boxes).all():
                return False
            if n and (boxes[:, 2:] < 0).any():
                return False
    except (TypeError, ValueError, OverflowError):
        return False
    return bool(ids_known(coco_gt, img, cat).all())


def _find_bad_result(results: list[Any], coco_gt: Any, metrics: Sequence[str], source: str) -> None:
    """Raise :class:`DatasetError` naming the first bad entry of ``results`` and the fix."""
    image_ids = set(coco_gt.getImgIds())
    cat_ids = set(coco_gt.getCatIds())
    need = {"image_id", "category_id", "score"}
    with_bbox = _needs_bbox(results, metrics)
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise DatasetError(f"--dt {source}: entry {i} is a {type(r).__name__}, expected an object")
        missing = need - set(r)
        if with_bbox:
            missing |= {"bbox"} - set(r)
        if "segm" in metrics:
            missing |= {"segmentation"} - set(r)
        if missing:
            why = f"needed by --metric {' '.join(metrics)}"
            if "bbox" in missing and not ("bbox" in metrics or "proposal" in metrics):
                why = "entry 0 has a bbox, so every entry needs one: the first entry sets the kind of the results"
            raise DatasetError(f"--dt {source}: entry {i} has no {', '.join(sorted(missing))} ({why})")
        if not (isinstance(r["image_id"], Hashable) and r["image_id"] in image_ids):
            raise DatasetError(
                f"--dt {source}: entry {i}: image_id {_shown(r['image_id'])} is not an image of the ground truth "
                "(were the results made on another dataset or split? pass the matching --gt)"
            )
        if not (isinstance(r["category_id"], Hashable) and r["category_id"] in cat_ids):
            raise DatasetError(
                f"--dt {source}: entry {i}: category_id {_shown(r['category_id'])} is not a category of the ground "
                f"truth (it has {sorted(cat_ids)}; were the results made with another class list?)"
            )
        problem = result_value_problem(r, with_bbox)
        if problem is not None:
            raise DatasetError(f"--dt {source}: entry {i}: {problem}")
    raise DatasetError(f"--dt {source}: the results cannot be evaluated (an entry has ids or values of the wrong type)")


def _polygons_to_rle(result: dict[str, Any], coco_gt: Any) -> dict[str, Any]:
    """A polygon (or uncompressed RLE) result mask becomes a compressed RLE; pycocotools' ``loadRes`` needs one."""
    from pycocotools import mask as mask_utils

    seg = result["segmentation"]
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        return result
    img = coco_gt.imgs[result["image_id"]]
    h, w = img["height"], img["width"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if seg else mask_utils.encode(np.zeros((h, w, 1), np.uint8, order="F"))[0]
    else:
        rle = mask_utils.frPyObjects(seg, h, w)
    rle = dict(rle)
    rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return {**result, "segmentation": rle}


def evaluate_files(
    gt: str | os.PathLike[str],
    dt: str | os.PathLike[str],
    metrics: Sequence[str] = ("bbox",),
    *,
    classwise: bool = False,
    engine: str = "det",
    plot_dir: str | os.PathLike[str] | None = None,
    workers: int = 0,
) -> CocoEvaluation:
    """Evaluate the results file ``dt`` (``-``: stdin) against the annotation file ``gt``.

    With ``plot_dir``, per-class precision-recall PNGs of each bbox/segm metric are written there
    (their paths in ``CocoEvaluation.plots``). ``workers`` processes share the work (0: automatic,
    see :func:`~detcli.evaluation.fast_coco.auto_workers`): with the ``det`` engine a long bbox
    results file is parsed in two halves at once, and categories are split between the processes
    for matching and accumulation (for segm only when asked for explicitly: measured slower on the
    loaded 2-core machine, the masks being Python objects the forked process touches); the numbers
    do not depend on it.

    Raises:
        DatasetError: a file is missing, not JSON, of the wrong kind, or refers to unknown images/categories.
        ConfigError: an unsupported metric or engine.
    """
    from detcli.evaluation.coco import check_metrics

    names = check_metrics(metrics, FILE_METRICS)
    coco_gt = load_ground_truth(gt)
    if "segm" in names:  # masks are rasterised at the image size
        for k, img in enumerate(coco_gt.dataset["images"]):
            if "height" not in img or "width" not in img:
                raise DatasetError(f"--gt {gt}: images[{k}] (id {img['id']}) has no height or width; --metric segm "
                                   "needs both")
    source = "stdin" if str(dt) == "-" else str(dt)
    text = read_text_file(dt, "--dt")
    results: list[dict[str, Any]] | ResultColumns | None = None
    if engine == "det":  # straight to columns (two processes parse halves of a long file)
        results = results_columns_of_text(text, coco_gt, names, workers if workers > 0 else auto_workers())
    if results is None:
        results = check_results(parse_json_text(text, dt, "--dt"), coco_gt, names, source)
    del text
    if "segm" in names:
        for ann in coco_gt.dataset["annotations"]:
            if "segmentation" not in ann:
                raise DatasetError(f"--gt {gt}: annotation id {ann.get('id')} has no segmentation; --metric segm needs masks")
    logger.info("evaluating %d results on %d images (%s)", len(results), len(coco_gt.getImgIds()), engine)
    cat_ids = sorted(coco_gt.getCatIds())  # COCOeval orders classes by sorted category id
    evaluation = evaluate_coco(coco_gt, results, names, classwise=classwise, engine=engine, supported=FILE_METRICS,
                               cat_ids=cat_ids, keep_precision=plot_dir is not None,
                               workers=workers, results_owned=True)  # 0: evaluate_coco decides per metric
    if plot_dir is not None:
        classes = [coco_gt.loadCats(c)[0]["name"] for c in cat_ids]
        for name, precision in evaluation.precision.items():
            evaluation.plots[name] = [str(p) for p in plot_pr_curves(precision, classes, plot_dir, prefix=name)]
    return evaluation


def plot_pr_curves(
    precision: np.ndarray, classes: Sequence[str], out_dir: str | os.PathLike[str], prefix: str = "bbox"
) -> list[Path]:
    """Write ``<prefix>_pr_<class>.png`` per class: precision over recall at IoU .50, .75 and mean .50:.95.

    ``precision`` is ``COCOeval.eval['precision']`` ``(T, R, K, A, M)``; -1 (no GT) entries are left out,
    a class without ground truth gets a plot saying so. Files are written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from detcli.fileio import atomic_output

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    written = []
    sns.set_theme(style="whitegrid")
    for k, name in enumerate(classes):
        p = precision[:, :, k, 0, -1]  # (T, R)
        fig, ax = plt.subplots(figsize=(5, 4))
        if (p > -1).any():
            for label, curve in (("IoU=0.50", p[0]), ("IoU=0.75", p[min(5, len(p) - 1)])):
                ax.plot(recall, np.where(curve > -1, curve, np.nan), label=label)
            mean = np.where((p > -1).all(0), p.mean(0), np.nan)
            ax.plot(recall, mean, label="IoU=0.50:0.95 mean", linestyle="--")
            ap = float(p[p > -1].mean())
            ax.set_title(f"{name}  AP={ap:.3f}")
            ax.legend(loc="lower left")
        else:
            ax.set_title(f"{name}: no ground truth")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
        path = out / f"{prefix}_pr_{k:03d}_{safe}.png"
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
