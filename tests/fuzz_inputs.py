"""Fuzz targets for det's file readers: COCO annotations, results files and the dataset converters.

Shared by ``tests/test_input_fuzz.py`` (a few hundred seeded cases per target) and
``benchmarks/fuzz.py`` (a longer run). Each target is ``(strategy, run)``: ``run(value, scratch)``
writes the generated input under the empty folder ``scratch`` and feeds it to the library; the
property is that it either returns or raises a :class:`~detcli.errors.DetError` (what the CLI turns
into one line on stderr and exit code 1) — never another exception.

Inputs start from a small valid file and mutate it (a field replaced by any JSON value: lists and
objects as ids, NaN and infinities, huge integers, strings, nulls; entries dropped or duplicated;
whole documents replaced by deep nesting or random bytes), so most cases get past the first check.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

# --- shared pieces -------------------------------------------------------------------------------
SPECIAL_NUMBERS = [0, -1, 1, 0.5, -0.0, 1e-9, 1e300, -1e300, 10**20, -(10**20), 2**63, 2**64, float("nan"),
                   float("inf"), float("-inf"), 1.5, 3, 640, 1e-320]
SPECIAL_TEXT = ["", "0", "1", "nan", "inf", "NaN", "1e999", "-1", "a", "é", "\x00", "x" * 300, "a.jpg", "../x.jpg",
                "/etc/passwd", "cat", "dog", "1,2", " "]

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from(SPECIAL_NUMBERS)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | st.sampled_from(SPECIAL_TEXT)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4) | st.sampled_from(
        ["id", "bbox", "score", "image_id", "category_id", "counts", "size"]), inner, max_size=4),
    max_leaves=12,
)


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    """A JSON document nested ``n`` levels deep (Python's parser gives up near 1000)."""
    return open_ * n + close * n


def dump(value: Any) -> str:
    """JSON text of ``value``; NaN/Infinity written as JavaScript literals (Python's json reads them back)."""
    return json.dumps(value, allow_nan=True)


def mutate(base: Any, edits: list[tuple[str, int, str, Any]]) -> Any:
    """Apply ``(section, index, key, value)`` edits to a copy of ``base``.

    ``section`` names a list of ``base`` (``""``: base itself is the list); ``key`` ``"<drop>"``
    removes the entry, ``"<dup>"`` duplicates it, ``"<whole>"`` replaces it by ``value``,
    ``"<del:K>"`` deletes its key K; otherwise ``entry[key] = value``.
    """
    doc = copy.deepcopy(base)
    for section, index, key, value in edits:
        seq = doc if section == "" else (doc.get(section) if isinstance(doc, dict) else None)
        if section != "" and isinstance(doc, dict) and key == "<section>":
            doc[section] = value
            continue
        if not isinstance(seq, list) or not seq:
            continue
        i = index % len(seq)
        if key == "<drop>":
            del seq[i]
        elif key == "<dup>":
            seq.append(copy.deepcopy(seq[i]))
        elif key == "<whole>":
            seq[i] = value
        elif isinstance(seq[i], dict):
            if key.startswith("<del:"):
                seq[i].pop(key[5:-1], None)
            else:
                seq[i][key] = value
    return doc


def edits_of(sections: list[str], keys: list[str], values: Any = json_values, max_size: int = 4) -> Any:
    structural = ["<drop>", "<dup>", "<whole>", "<section>"] + [f"<del:{k}>" for k in keys]
    return st.lists(
        st.tuples(st.sampled_from(sections), st.integers(0, 5), st.sampled_from(keys + structural), values),
        max_size=max_size,
    )


#: PNG bytes of a small image (80x60), written where converters look for images.
def png_bytes(width: int = 80, height: int = 60) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 127, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = png_bytes()

# --- COCO annotation files -----------------------------------------------------------------------
COCO_BASE: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "a.png", "height": 60, "width": 80},
        {"id": 2, "file_name": "b.png", "height": 60, "width": 80},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0,
         "segmentation": [[10, 10, 50, 10, 50, 40, 10, 40]]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 80, 60], "area": 4800, "iscrowd": 0,
         "segmentation": {"size": [60, 80], "counts": "mb0i0S1000000000000000000000000000000000000000000000000000000000kZ2"}},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 20, 20, 20], "area": 400, "iscrowd": 1,
         "segmentation": [[20, 20, 40, 20, 40, 40, 20, 40]]},
    ],
}
COCO_KEYS = ["id", "file_name", "height", "width", "name", "image_id", "category_id", "bbox", "area", "iscrowd",
             "ignore", "segmentation"]
coco_values = json_values | st.lists(st.sampled_from(SPECIAL_NUMBERS), min_size=0, max_size=6)
coco_texts = (
    edits_of(["images", "categories", "annotations"], COCO_KEYS, coco_values).map(lambda e: dump(mutate(COCO_BASE, e)))
    | json_values.map(dump)
    | st.integers(1, 3000).map(deep)
    | st.integers(1, 3000).map(lambda n: '{"images": ' + deep(n) + ', "categories": []}')
    | st.binary(max_size=50).map(lambda b: b.decode("latin-1"))
)


def write_text(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


def run_coco_dataset(text: str, scratch: Path) -> None:
    """``CocoDataset`` as training builds it (``filter_empty_gt``), then every annotation read."""
    from detcli.data.coco import CocoDataset

    ann = write_text(scratch / "ann.json", text)
    for test_mode in (False, True):
        ds = CocoDataset(str(ann), pipeline=[], img_prefix=str(scratch), test_mode=test_mode)
        for i in range(len(ds)):
            ds.get_ann_info(i)


def run_coco_check(text: str, scratch: Path) -> None:
    """``det convert-dataset check ANN --img-dir DIR``."""
    from detcli.data.converters import check_coco_file

    (scratch / "a.png").write_bytes(PNG)
    ann = write_text(scratch / "ann.json", text)
    report = check_coco_file(ann, scratch)
    report.to_dict()
    json.dumps(report.to_dict())


# --- results files -------------------------------------------------------------------------------
RESULTS_BASE: list[dict[str, Any]] = [
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "score": 0.9,
     "segmentation": [[10, 10, 50, 10, 50, 40]]},
    {"image_id": 1, "category_id": 2, "bbox": [0, 0, 70, 60], "score": 0.5,
     "segmentation": {"size": [60, 80], "counts": "mb0i0S1000000000000000000000000000000000000000000000000000000000kZ2"}},
    {"image_id": 2, "category_id": 1, "bbox": [20, 20, 20, 20], "score": 0.3, "segmentation": []},
]
RESULT_KEYS = ["image_id", "category_id", "bbox", "score", "segmentation"]
results_texts = (
    edits_of([""], RESULT_KEYS, coco_values).map(lambda e: dump(mutate(RESULTS_BASE, e)))
    | json_values.map(dump)
    | st.integers(1, 3000).map(deep)
    | st.integers(1, 3000).map(lambda n: '[{"image_id": 1, "category_id": 1, "score": 1, "bbox": ' + deep(n) + "}]")
    | st.binary(max_size=50).map(lambda b: b.decode("latin-1"))
)
#: Ground truth files for the results targets: the base file, or a mutated one (ids of odd types).
gt_texts = st.just(dump(COCO_BASE)) | edits_of(["images", "categories", "annotations"], COCO_KEYS, coco_values, 2).map(
    lambda e: dump(mutate(COCO_BASE, e)))


def _run_eval(engine: str) -> Callable[[tuple[str, str, bool], Path], None]:
    def run(value: tuple[str, str, bool], scratch: Path) -> None:
        from detcli.evaluation import evaluate_files

        gt_text, dt_text, segm = value
        gt = write_text(scratch / "gt.json", gt_text)
        dt = write_text(scratch / "dt.json", dt_text)
        evaluate_files(gt, dt, ["segm"] if segm else ["bbox"], engine=engine, workers=1)

    return run


eval_inputs = st.tuples(gt_texts, results_texts, st.booleans())


def _test_split(scratch: Path, gt_text: str) -> tuple[Any, list[dict[str, Any]]]:
    from detcli.data.coco import CocoDataset

    gt = write_text(scratch / "gt.json", gt_text)
    ds = CocoDataset(str(gt), pipeline=[], img_prefix=str(scratch), test_mode=True)
    return ds, [ds.get_ann_info(i) for i in range(len(ds))]


def run_confusion(value: tuple[str, str, float, float, float | None], scratch: Path) -> None:
    """What ``det confusion-matrix`` computes (the file reading and the matrix; not the PNG)."""
    from detcli.evaluation.confusion import compute_confusion_matrix
    from detcli.evaluation.files import read_json_file

    gt_text, dt_text, score_thr, iou_thr, nms_thr = value
    ds, anns = _test_split(scratch, gt_text)
    data = read_json_file(write_text(scratch / "dt.json", dt_text), "RESULTS")
    m = compute_confusion_matrix(anns, ds.image_ids, list(ds.classes), list(ds.cat_ids), data, score_thr=score_thr,
                                 tp_iou_thr=iou_thr, nms_iou_thr=nms_thr, source="dt.json")
    m.to_csv()
    m.to_csv(normalized=True)


thresholds = st.sampled_from([0.0, 0.3, 0.5, 1.0, -0.1, 1.5, float("nan")])
confusion_inputs = st.tuples(gt_texts, results_texts, thresholds, thresholds, st.none() | thresholds)


def run_analyze(value: tuple[str, str], scratch: Path) -> None:
    """What ``det analyze-results`` computes: per-image mAP of every image (not the painting)."""
    from detcli.evaluation.confusion import group_results
    from detcli.evaluation.files import read_json_file
    from detcli.tools.analysis import score_images

    gt_text, dt_text = value
    ds, _ = _test_split(scratch, gt_text)
    data = read_json_file(write_text(scratch / "dt.json", dt_text), "RESULTS")
    score_images(ds, group_results(data, ds.image_ids, list(ds.cat_ids), "dt.json"))


analyze_inputs = st.tuples(gt_texts, results_texts)

# --- converters ----------------------------------------------------------------------------------
YOLO_PIECES = ["0", "1", "2", "-1", "0.5", "0.25", "1e-9", "nan", "inf", "-inf", "1e999", "0x10", "1_0", "abc", "é",
               "\t", " ", "\n", "\r\n", "0.0", "3.0", "1.5", "-0.5", "\x00", "\ufeff", "# c", "9" * 40]
yolo_lines = st.lists(st.sampled_from(YOLO_PIECES) | st.text(max_size=4), max_size=7).map(" ".join)
yolo_inputs = st.tuples(
    st.lists(yolo_lines | st.just("0 0.5 0.5 0.5 0.5") | st.just("1 0.1 0.1 0.9 0.1 0.5 0.9"), max_size=5).map("\n".join),
    st.sampled_from(["cat\ndog\n", "cat\n", "", "\n\n", "cat\ncat\n", "names: [cat, dog]\n", "x" * 5]),
    st.booleans(),  # the image is a valid PNG (else: truncated bytes)
)


def run_yolo(value: tuple[str, str, bool], scratch: Path) -> None:
    from detcli.data.converters import convert_yolo

    labels, names, good_image = value
    (scratch / "images" / "train").mkdir(parents=True)
    (scratch / "labels" / "train").mkdir(parents=True)
    (scratch / "images" / "train" / "a.png").write_bytes(PNG if good_image else PNG[:30])
    write_text(scratch / "labels" / "train" / "a.txt", labels)
    write_text(scratch / "names.txt", names)
    convert_yolo(scratch, scratch / "names.txt", scratch / "out")


VOC_OBJECT = ("<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
              "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
voc_fields = st.sampled_from(["cat", "dog", "person", "", "1", "0", "-1", "nan", "inf", "1e999", "3.5", "&amp;", "<x/>",
                              "]]>", "é", "9" * 30, " 2 "])
voc_objects = st.fixed_dictionaries({k: voc_fields | st.text(max_size=3) for k in ("name", "difficult", "x1", "y1", "x2", "y2")}
                                    ).map(lambda d: VOC_OBJECT.format(**{k: v.replace("<", "&lt;") if k == "name" else v for k, v in d.items()}))
voc_xml = st.tuples(
    st.lists(voc_objects | st.sampled_from(["<object/>", "<object><name>cat</name></object>", "<part/>", "<", "&bad;"]),
             max_size=4),
    voc_fields, voc_fields,
).map(lambda t: f"<annotation><size><width>{t[1]}</width><height>{t[2]}</height></size>{''.join(t[0])}</annotation>")
voc_inputs = st.tuples(voc_xml | st.text(max_size=40) | st.integers(1, 5000).map(lambda n: "<a>" * n + "</a>" * n),
                       st.sampled_from(["a\n", "a b\n", "", "a\na\n", "missing\n", "../a\n"]),
                       st.sampled_from(["person\ncat\ndog\n", "cat\n", None]))


def run_voc(value: tuple[str, str, str | None], scratch: Path) -> None:
    from detcli.data.converters import convert_voc

    xml, split_list, classes = value
    year = scratch / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (year / sub).mkdir(parents=True)
    write_text(year / "Annotations" / "a.xml", xml)
    write_text(year / "ImageSets" / "Main" / "train.txt", split_list)
    (year / "JPEGImages" / "a.jpg").write_bytes(PNG)
    names = None
    if classes is not None:
        names = write_text(scratch / "classes.txt", classes)
    convert_voc(scratch / "VOCdevkit", scratch / "out", names)


LABELME_BASE: dict[str, Any] = {
    "imagePath": "a.png", "imageWidth": 80, "imageHeight": 60,
    "shapes": [
        {"label": "cat", "points": [[1, 1], [5, 1], [5, 4]], "shape_type": "polygon", "group_id": None},
        {"label": "dog", "points": [[0, 0], [7, 5]], "shape_type": "rectangle", "group_id": 1},
        {"label": "dog", "points": [[2, 2], [3, 2], [3, 3]], "shape_type": "polygon", "group_id": 1},
    ],
}
LABELME_KEYS = ["label", "points", "shape_type", "group_id"]
labelme_values = coco_values | st.sampled_from(["polygon", "rectangle", "circle", "point", "line", "cat", "dog",
                                                "__ignore__", "../../x.png", "/tmp/x.png", "a.png"])


def _labelme_doc(edits: list[tuple[str, int, str, Any]], top: dict[str, Any]) -> str:
    doc = mutate(LABELME_BASE, edits)
    if isinstance(doc, dict):
        doc.update(top)
    return dump(doc)


labelme_inputs = st.tuples(
    st.tuples(edits_of(["shapes"], LABELME_KEYS, labelme_values),
              st.dictionaries(st.sampled_from(["imagePath", "imageWidth", "imageHeight", "shapes"]), labelme_values,
                              max_size=2)).map(lambda t: _labelme_doc(*t))
    | json_values.map(dump) | st.integers(1, 3000).map(deep),
    st.sampled_from([None, "cat\ndog\n", "__ignore__\ncat\n", ""]),
)


def run_labelme(value: tuple[str, str | None], scratch: Path) -> None:
    from detcli.data.converters import convert_labelme

    doc, classes = value
    folder = scratch / "lm"
    folder.mkdir()
    (folder / "a.png").write_bytes(PNG)
    write_text(folder / "a.json", doc)
    names = write_text(scratch / "classes.txt", classes) if classes is not None else None
    convert_labelme(folder, scratch / "out.json", names)


#: name -> (strategy, run(value, scratch)).
TARGETS: dict[str, tuple[Any, Callable[[Any, Path], None]]] = {
    "coco_dataset": (coco_texts, run_coco_dataset),
    "coco_check": (coco_texts, run_coco_check),
    "eval_det": (eval_inputs, _run_eval("det")),
    "eval_pycocotools": (eval_inputs, _run_eval("pycocotools")),
    "confusion_matrix": (confusion_inputs, run_confusion),
    "analyze_results": (analyze_inputs, run_analyze),
    "yolo": (yolo_inputs, run_yolo),
    "voc": (voc_inputs, run_voc),
    "labelme": (labelme_inputs, run_labelme),
}


def run_target(name: str, value: Any, scratch: Path) -> None:
    """Run one case in an empty ``scratch`` folder (created), with the logs of det silenced."""
    import logging

    scratch.mkdir(parents=True, exist_ok=True)
    logging.getLogger("detcli").setLevel(logging.CRITICAL)
    cwd = os.getcwd()
    try:
        TARGETS[name][1](value, scratch)
    finally:
        os.chdir(cwd)
