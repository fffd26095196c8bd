"""Results files with wrong-typed or non-finite scores/boxes, unhashable ids or absurd nesting: every reader
(`det eval --gt --dt` with each engine, `det confusion-matrix`, `det analyze-results`) ends with one line naming
the file and the entry, exit 1, nothing written; NaN/inf are never evaluated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.errors import DatasetError
from detcli.evaluation import evaluate_files
from detcli.evaluation.confusion import group_results
from detcli.evaluation.files import parse_json_text, result_value_problem

GT = {
    "images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.jpg"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0}],
    "categories": [{"id": 1, "name": "thing"}],
}
GOOD = {"image_id": 1, "category_id": 1, "bbox": [10.0, 10, 30, 20], "score": 0.9}

# (name, the bad entry (index 3 of the file), the expected end of the message)
BAD = [
    ("string-score", {**GOOD, "score": "high"},
     'entry 3: score "high" is not a finite number (scores are numbers, as `det test --out` writes)'),
    ("numeric-string-score", {**GOOD, "score": "0.5"}, 'entry 3: score "0.5" is not a finite number'),
    ("null-score", {**GOOD, "score": None}, "entry 3: score null is not a finite number"),
    ("nan-score", {**GOOD, "score": float("nan")}, "entry 3: score nan is not a finite number"),
    ("inf-score", {**GOOD, "score": float("inf")}, "entry 3: score inf is not a finite number"),
    ("list-score", {**GOOD, "score": [0.5]}, "entry 3: score [0.5] is not a finite number"),
    ("nan-box", {**GOOD, "bbox": [1.0, float("nan"), 3, 4]}, "entry 3: bbox [1.0, NaN, 3, 4] is not [x, y, w, h] of 4 finite numbers"),
    ("inf-box", {**GOOD, "bbox": [1.0, 2, float("-inf"), 4]}, "entry 3: bbox [1.0, 2, -Infinity, 4] is not [x, y, w, h]"),
    ("string-box", {**GOOD, "bbox": [1, 2, "3", 4]}, 'entry 3: bbox [1, 2, "3", 4] is not [x, y, w, h] of 4 finite numbers'),
    ("short-box", {**GOOD, "bbox": [1, 2, 3]}, "entry 3: bbox [1, 2, 3] is not [x, y, w, h] of 4 finite numbers"),
    ("null-box", {**GOOD, "bbox": None}, "entry 3: bbox null is not [x, y, w, h] of 4 finite numbers"),
    ("list-image-id", {**GOOD, "image_id": [1]}, "entry 3: image_id [1] is not an image of the"),
    ("dict-category-id", {**GOOD, "category_id": {"a": 1}}, "entry 3: category_id {'a': 1} is not a"),
]


def write(tmp_path: Path, bad: dict[str, Any]) -> tuple[Path, Path]:
    g, r = tmp_path / "gt.json", tmp_path / "res.json"
    g.write_text(json.dumps(GT))
    r.write_text(json.dumps([GOOD, GOOD, {**GOOD, "score": 0.3}, bad, GOOD]))  # NaN/Infinity as JSON allows
    return g, r


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, normalize_argv(list(args)))


@pytest.mark.parametrize("engine", ["det", "pycocotools", "faster-coco-eval"])
@pytest.mark.parametrize(("name", "bad", "message"), BAD, ids=[c[0] for c in BAD])
def test_eval_files_names_the_file_and_entry(tmp_path: Path, engine: str, name: str, bad, message: str) -> None:
    if engine == "faster-coco-eval":
        pytest.importorskip("faster_coco_eval")
    g, r = write(tmp_path, bad)
    message = message.replace("{'a': 1}", '{"a": 1}')  # --dt messages show JSON
    result = invoke("eval", "--gt", str(g), "--dt", str(r), "--engine", engine, "--plot-dir", str(tmp_path / "pr"))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"error: --dt {r}: entry 3: ") and message in lines[0], lines[0]
    assert not (tmp_path / "pr").exists()


def test_valid_file_still_evaluates_with_ints_and_floats(tmp_path: Path) -> None:
    g, r = write(tmp_path, {**GOOD, "score": 1, "bbox": [10, 10, 30, 20]})
    for engine in ("det", "pycocotools"):
        assert evaluate_files(g, r, engine=engine).metrics["bbox_mAP"] == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "bad", "message"), BAD, ids=[c[0] for c in BAD])
def test_confusion_and_analyze_results_readers(name: str, bad, message: str) -> None:
    results = [GOOD, GOOD, GOOD, bad]
    with pytest.raises(DatasetError) as info:
        group_results(results, [1], [1], source="res.json")
    text = str(info.value)
    assert text.startswith("res.json: entry 3: "), text
    if "image_id" in message or "category_id" in message:
        assert message.split(" is not")[0] in text
    else:
        assert message in text


@pytest.mark.parametrize("command", ["confusion-matrix", "analyze-results"])
def test_cli_confusion_and_analyze_results_one_line(tmp_path: Path, command: str) -> None:
    r = tmp_path / "res.json"
    r.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": "high"}]))
    out = tmp_path / "out"
    result = invoke(command, "quickstart", str(r), str(out), "--cfg-options", "data.test.num_images=2")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].endswith(f'{r}: entry 0: score "high" is not a finite number (scores are numbers, as '
                             "`det test --out` writes)"), lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_result_value_problem_accepts_segm_only_entries() -> None:
    assert result_value_problem({"score": 0.5, "segmentation": []}, with_bbox=False) is None
    assert result_value_problem({"score": 0.5, "bbox": []}, with_bbox=False) is None
    assert result_value_problem({"score": True}, with_bbox=False) == (
        "score true is not a finite number (scores are numbers, as `det test --out` writes)")


def test_deep_nesting_is_a_clear_error(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DatasetError, match=r"^--dt x.json: JSON nested deeper than the parser's limit \(about \d+ "
                                           r"levels; COCO files need 5\); pass a COCO .json file$"):
        parse_json_text(deep, "x.json", "--dt")
    g = tmp_path / "gt.json"
    g.write_text(json.dumps(GT))
    r = tmp_path / "deep.json"
    r.write_text(deep)
    for engine in ("det", "pycocotools"):
        result = invoke("eval", "--gt", str(g), "--dt", str(r), "--engine", engine)
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert f"--dt {r}: JSON nested deeper" in result.output
    result = invoke("eval", "--gt", str(r), "--dt", str(g))
    assert result.exit_code == 1 and f"--gt {r}: JSON nested deeper" in result.output
