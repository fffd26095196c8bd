"""Property-based fuzzing of det's file readers (hypothesis, seeded and derandomized).

Whatever a COCO annotation file, a results file or a YOLO/VOC/labelme dataset holds, reading it
ends in a result or in one :class:`~detcli.errors.DetError` — what the CLI prints as one line with
exit code 1 — never in another exception. The targets live in ``tests/fuzz_inputs.py``;
``benchmarks/fuzz.py`` runs them longer. The regression tests below pin the messages of the crashes
the fuzzing found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from detcli.errors import DatasetError, DetError

import fuzz_inputs as fz

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)


def _check(name: str, value: Any, tmp: Path) -> None:
    import shutil

    where = tmp / "case"
    shutil.rmtree(where, ignore_errors=True)
    try:
        fz.run_target(name, value, where)
    except DetError as e:
        message = str(e).strip()
        assert message, f"{name}: empty error message"
    finally:
        shutil.rmtree(where, ignore_errors=True)


#: Cases per target: a few hundred, each test within ~15 s on one loaded core.
EXAMPLES = {"coco_dataset": 200, "voc": 200, "yolo": 200, "labelme": 250}


def _make(name: str):  # one test per target, so a failure names it
    strategy = fz.TARGETS[name][0]

    @settings(FUZZ, max_examples=EXAMPLES.get(name, 300))
    @given(value=strategy)
    def test(tmp_path: Path, value: Any) -> None:
        _check(name, value, tmp_path)

    test.__name__ = f"test_fuzz_{name}_returns_or_raises_det_error"
    return test


for _name in fz.TARGETS:
    globals()[f"test_fuzz_{_name}_returns_or_raises_det_error"] = _make(_name)


# --- what the fuzzing found: each now a clear error naming the file, entry and key ---------------
def _coco(tmp_path: Path, edits: list[tuple[str, int, str, Any]]) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(fz.dump(fz.mutate(fz.COCO_BASE, edits)))
    return path


@pytest.mark.parametrize("section,index,key,value,expected", [
    ("images", 1, "id", [3], "images[1].id is [3]; ids are integers"),
    ("categories", 0, "id", None, "categories[0].id is null; ids are integers"),
    ("annotations", 2, "image_id", {"a": 1}, 'annotations[2].image_id is {"a": 1}; ids are integers'),
    ("annotations", 1, "bbox", [0, 0, float("nan"), 3], "annotations[1].bbox is [0, 0, NaN, 3]; boxes are [x, y, w, h], 4 finite numbers"),
    ("images", 0, "height", [], "images[0].height is []; image sizes are positive numbers"),
    ("annotations", 0, "area", None, "annotations[0].area is null; areas are finite numbers"),
])
def test_coco_dataset_names_ill_typed_field(tmp_path: Path, section: str, index: int, key: str, value: Any,
                                             expected: str) -> None:
    from detcli.data.coco import CocoDataset

    path = _coco(tmp_path, [(section, index, key, value)])
    with pytest.raises(DatasetError) as info:
        CocoDataset(str(path), pipeline=[])
    assert str(info.value) == f"{path}: {expected}; fix the annotation file"


def test_deep_json_is_a_clear_limit_error(tmp_path: Path) -> None:
    from detcli.data.coco import CocoDataset
    from detcli.data.converters import convert_labelme

    path = tmp_path / "deep.json"
    path.write_text(fz.deep(100_000))
    with pytest.raises(DatasetError, match=r"deep\.json: JSON nested deeper than the parser's limit \(about \d+ levels"):
        CocoDataset(str(path), pipeline=[])
    folder = tmp_path / "lm"
    folder.mkdir()
    (folder / "a.json").write_text(fz.deep(100_000, "{\"a\":", "}"))
    with pytest.raises(DatasetError, match=r"a\.json: JSON nested deeper than the parser's limit"):
        convert_labelme(folder, tmp_path / "out.json")


@pytest.mark.parametrize("engine", ["det", "pycocotools"])
def test_eval_ground_truth_checks(tmp_path: Path, engine: str) -> None:
    from detcli.evaluation import evaluate_files

    dt = tmp_path / "dt.json"
    dt.write_text(fz.dump(fz.RESULTS_BASE))
    gt = _coco(tmp_path, [("images", 0, "id", [1])])
    with pytest.raises(DatasetError, match=r"^--gt .*gt?\.json|ann\.json: images\[0\]\.id is \[1\]; ids are integers"):
        evaluate_files(gt, dt, engine=engine)
    gt = _coco(tmp_path, [("annotations", 1, "<del:area>", None)])
    with pytest.raises(DatasetError, match=r"annotations\[1\]\.area is missing"):
        evaluate_files(gt, dt, engine=engine)
    gt = _coco(tmp_path, [("annotations", 0, "<del:iscrowd>", None)])  # optional: read as 0
    assert evaluate_files(gt, dt, engine=engine).metrics["bbox_mAP"] == pytest.approx(
        evaluate_files(_coco(tmp_path, []), dt, engine=engine).metrics["bbox_mAP"])


@pytest.mark.parametrize("engine", ["det", "pycocotools"])
@pytest.mark.parametrize("index,key,value,expected", [
    (1, "segmentation", [[1.0, 2.0]], "entry 1: segmentation polygon 0 is [1.0, 2.0]; a polygon is"),
    (0, "segmentation", 3, "entry 0: segmentation is 3; a mask is a list of polygons or an RLE"),
    (2, "segmentation", {"size": [10**6, 10**6], "counts": "a"}, "entry 2: segmentation RLE size [1000000, 1000000] "
     "is not the image's [height, width] = [60, 80]"),
    (2, "<del:bbox>", None, "entry 2 has no bbox (entry 0 has a bbox, so every entry needs one"),
])
def test_eval_segm_results_name_the_entry(tmp_path: Path, engine: str, index: int, key: str, value: Any,
                                          expected: str) -> None:
    from detcli.evaluation import evaluate_files

    gt = _coco(tmp_path, [])
    dt = tmp_path / "dt.json"
    dt.write_text(fz.dump(fz.mutate(fz.RESULTS_BASE, [("", index, key, value)])))
    with pytest.raises(DatasetError) as info:
        evaluate_files(gt, dt, ["segm"], engine=engine)
    assert str(info.value).startswith(f"--dt {dt}: {expected}")


def test_check_reports_huge_category_ids_without_building_the_range(tmp_path: Path) -> None:
    from detcli.data.converters import check_coco_file

    path = _coco(tmp_path, [("categories", 0, "id", 10**15), ("annotations", 0, "category_id", 10**15),
                            ("annotations", 2, "category_id", 10**15)])
    report = check_coco_file(path)
    gaps = [i for i in report.issues if i.code == "category_id_gaps"]
    assert len(gaps) == 1 and gaps[0].examples == ["ids 2..1000000000000000, missing 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, ..."]


def test_yolo_and_voc_refuse_infinities(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"a\.txt:1: nan or infinite value \('0 inf 0.5 0.5 0.5'\)"):
        fz.run_target("yolo", ("0 inf 0.5 0.5 0.5", "cat\n", True), tmp_path / "y")
    # an infinite <size> is ignored: the image's own size is read instead
    xml = "<annotation><size><width>1e999</width><height>60</height></size></annotation>"
    fz.run_target("voc", (xml, "a\n", None), tmp_path / "v")
    data = json.loads((tmp_path / "v" / "out" / "voc07_train.json").read_text())
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (80, 60)


def test_labelme_group_id_must_be_a_scalar(tmp_path: Path) -> None:
    doc = fz.dump(fz.mutate(fz.LABELME_BASE, [("shapes", 0, "group_id", [1])]))
    with pytest.raises(DatasetError, match=r"a\.json: shapes\[0\]: group_id is \[1\]; it is an integer or null"):
        fz.run_target("labelme", (doc, None), tmp_path / "l")


def test_cli_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    gt = _coco(tmp_path, [("categories", 1, "id", [2])])
    dt = tmp_path / "dt.json"
    dt.write_text(fz.dump(fz.RESULTS_BASE))
    proc = subprocess.run([sys.executable, "-m", "detcli", "eval", "--gt", str(gt), "--dt", str(dt)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --gt ") and "categories[1].id is [2]" in lines[0], proc.stderr


def test_null_annotations_is_an_error_and_missing_ones_are_not(tmp_path: Path) -> None:
    from detcli.data.coco import CocoDataset

    path = tmp_path / "ann.json"
    path.write_text(json.dumps({**fz.COCO_BASE, "annotations": None}))
    with pytest.raises(DatasetError, match=r"ann\.json: 'annotations' must be a list, got null"):
        CocoDataset(str(path), pipeline=[])
    path.write_text(json.dumps({k: v for k, v in fz.COCO_BASE.items() if k != "annotations"}))
    assert len(CocoDataset(str(path), pipeline=[], test_mode=True)) == 2


def test_segm_needs_image_sizes_in_the_ground_truth(tmp_path: Path) -> None:
    from detcli.evaluation import evaluate_files

    gt = _coco(tmp_path, [("images", 1, "<del:height>", None)])
    dt = tmp_path / "dt.json"
    dt.write_text(fz.dump(fz.RESULTS_BASE))
    with pytest.raises(DatasetError, match=r"images\[1\] \(id 2\) has no height or width; --metric segm needs both"):
        evaluate_files(gt, dt, ["segm"])
    assert evaluate_files(gt, dt, ["bbox"]).metrics["bbox_mAP"] >= 0  # boxes do not need them
