"""Bad inputs that benchmarks/bad_inputs.py found still ending in a traceback or accepted silently (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.data.base import load_class_names
from detcli.engine.evaluation import check_eval_options
from detcli.errors import ConfigError, DatasetError
from detcli.evaluation.files import result_value_problem

runner = CliRunner()


def one_error_line(*args: str, stdin: bytes | None = None) -> str:
    result = runner.invoke(app, normalize_argv(list(args)), input=stdin)
    lines = [line for line in result.output.splitlines() if line.strip() and " INFO " not in line]
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    return lines[0]


@pytest.fixture()
def coco(tmp_path: Path) -> tuple[Path, Path]:
    """A one-image, one-box ground truth and a results file that matches it."""
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "score": 0.9}]))
    return tmp_path / "gt.json", tmp_path / "dt.json"


@pytest.mark.parametrize("options, fragment", [
    ({"iou_thrs": "[[["}, "iou_thrs='[[[': must be an IoU in [0, 1] or a list of them"),
    ({"iou_thrs": [0.5, 1.5]}, "iou_thrs=[0.5, 1.5]: must be an IoU in [0, 1]"),
    ({"iou_thr": float("nan")}, "iou_thr=nan: must be an IoU"),
    ({"proposal_nums": [100, 0]}, "proposal_nums=[100, 0]: must be a positive integer"),
    ({"proposal_nums": [1.5]}, "proposal_nums=[1.5]: must be a positive integer"),
    ({"scale_ranges": [[32, 0]]}, "scale_ranges=[[32, 0]]: must be a list of [min, max]"),
    ({"eval_mode": "11point"}, "eval_mode='11point': must be area or 11points"),
    ({"classwise": "yes"}, "classwise='yes': must be true or false"),
])
def test_eval_option_values_are_checked_before_the_model_runs(options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        check_eval_options(options)
    assert fragment in str(e.value)


def test_good_eval_option_values_pass() -> None:
    check_eval_options({"iou_thrs": [0.5, 0.75], "iou_thr": 0.5, "proposal_nums": [100, 300, 1000],
                        "scale_ranges": [[0, 32], [32, 1e5]], "eval_mode": "11points", "classwise": False})
    check_eval_options({"iou_thrs": None, "iou_thr": 1, "proposal_nums": 100, "eval_mode": "area"})


def test_plot_dir_under_a_file_is_one_line_before_evaluating(coco: tuple[Path, Path], tmp_path: Path) -> None:
    gt, dt = coco
    blocker = tmp_path / "img.jpg"
    blocker.write_bytes(b"a file")
    line = one_error_line("eval", "--gt", str(gt), "--dt", str(dt), "--plot-dir", str(blocker / "pr"))
    assert f"{blocker}/pr: the folder of the precision-recall plots (--plot-dir) cannot be created: {blocker} is a file" in line
    assert blocker.read_bytes() == b"a file"


def test_negative_width_result_box_is_refused(coco: tuple[Path, Path]) -> None:
    gt, dt = coco
    dt.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, -4, 4], "score": 0.9}]))
    for engine in ("det", "pycocotools"):
        line = one_error_line("eval", "--gt", str(gt), "--dt", str(dt), "--engine", engine)
        assert "has a negative width or height" in line and "[10, 10, -4, 4]" in line
    assert result_value_problem({"score": 0.5, "bbox": [0, 0, 0, 0]}, with_bbox=True) is None  # degenerate is fine
    assert "negative" in result_value_problem({"score": 0.5, "bbox": [0, 0, 1, -1e-9]}, with_bbox=True)


def test_check_stdin_not_utf8_is_one_line() -> None:
    line = one_error_line("convert-dataset", "check", "-", stdin=b"\xff\x00garbage")
    assert "stdin: not UTF-8 text (byte 0); pipe a COCO annotation .json file" in line


def test_class_names_file_not_utf8(tmp_path: Path) -> None:
    png = tmp_path / "names.txt"
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with pytest.raises(DatasetError, match=r"names\.txt is not UTF-8 text \(byte 0\); give a text file with one class"):
        load_class_names(str(png), "--names")


def test_yolo_label_not_utf8_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "y"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (16, 16)).save(root / "images/0.jpg")
    (root / "labels/0.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 \xff\xfe\n")
    (tmp_path / "names.txt").write_text("a\n")
    out = tmp_path / "out"
    line = one_error_line("convert-dataset", "yolo", str(root), "--names", str(tmp_path / "names.txt"), "-o", str(out))
    assert f"{root}/labels/0.txt: not UTF-8 text (byte 18)" in line
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
