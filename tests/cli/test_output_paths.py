"""Output paths that cannot be written end every writing command with one red line before any work (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv

runner = CliRunner()


def one_error_line(*args: str) -> str:
    result = runner.invoke(app, normalize_argv(list(args)))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    return lines[0]


@pytest.fixture()
def blocker(tmp_path: Path) -> Path:
    img = tmp_path / "img.jpg"
    img.write_bytes(b"not a folder")
    return img


def test_train_work_dir_under_a_file(blocker: Path) -> None:
    line = one_error_line("train", "quickstart", "--work-dir", str(blocker / "sub"))
    assert f"{blocker}/sub: the work dir (--work-dir) cannot be created: {blocker} is a file, not a folder; choose another path" in line


def test_converters_out_dir_under_a_file(blocker: Path) -> None:
    line = one_error_line("convert-dataset", "shapes", str(blocker / "sub"), "--num-images", "2")
    assert f"{blocker}/sub: the output folder (OUT_DIR) cannot be created: {blocker} is a file" in line
    assert blocker.read_bytes() == b"not a folder"


def test_plot_curve_out_under_a_file(blocker: Path, tmp_path: Path) -> None:
    log = tmp_path / "x.log.json"
    log.write_text('{"env_info": "", "config": ""}\n{"mode": "train", "epoch": 1, "iter": 1, "loss": 1.0}\n'
                   '{"mode": "train", "epoch": 1, "iter": 2, "loss": 0.5}\n')
    line = one_error_line("analyze-logs", "plot-curve", str(log), "--keys", "loss", "--out", str(blocker / "c.png"))
    assert str(blocker) in line and "a file" in line


def test_infer_out_dir_under_a_file(blocker: Path, tmp_path: Path) -> None:
    line = one_error_line("infer", str(tmp_path / "model.pth"), str(blocker), "--out-dir", str(blocker / "sub"))
    assert f"{blocker}/sub: the output folder (--out-dir) cannot be created: {blocker} is a file" in line


def test_export_output_file_under_a_file(blocker: Path, tmp_path: Path) -> None:
    line = one_error_line("export-onnx", str(tmp_path / "model.pth"), "--output-file", str(blocker / "m.onnx"))
    assert f"{blocker}: the folder of the ONNX file (--output-file) is a file; choose another path" in line


def test_confusion_matrix_out_dir_under_a_file(blocker: Path, tmp_path: Path) -> None:
    results = tmp_path / "r.json"
    results.write_text("[]")
    line = one_error_line("confusion-matrix", "quickstart", str(results), str(blocker / "cm"))
    assert f"{blocker}/cm: the output folder (OUT_DIR) cannot be created: {blocker} is a file" in line


def test_optimize_anchors_output_dir_under_a_file(blocker: Path) -> None:
    line = one_error_line("optimize-anchors", "quickstart", "--input-shape", "64", "64", "--output-dir", str(blocker / "a"))
    assert f"{blocker}/a: the folder of the result file (--output-dir) cannot be created: {blocker} is a file" in line
