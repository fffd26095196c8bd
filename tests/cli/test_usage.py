"""Usage errors are one red line with exit code 1; `det --help` groups commands; flags show no type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Any:
    return runner.invoke(app, normalize_argv(list(args)))


@pytest.mark.parametrize(
    ("argv", "problem", "help_of"),
    [
        (["train", "p.yaml", "--bogus"], "No such option: --bogus", "det train --help"),
        (["infer"], "Missing argument 'checkpoint'.", "det infer --help"),
        (["infer", "c.pth", "img.jpg", "--device"], "Option '--device' requires an argument.", "det infer --help"),
        (["infer", "c.pth", "--score-thr", "abc"], "Invalid value for '--score-thr'", "det infer --help"),
        (["trian"], "No such command 'trian'. Did you mean 'train'?", "det --help"),
        (["config", "show"], "Missing argument 'preset'.", "det config show --help"),
        (["analyze-logs", "plot-curve", "a.log.json"], "Invalid value for --out", "det analyze-logs plot-curve --help"),
    ],
)
def test_usage_error_is_one_line_exit_1(argv: list[str], problem: str, help_of: str) -> None:
    result = invoke(*argv)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and problem in lines[0]
    assert lines[0].endswith(f"— see '{help_of}'")
    assert "╭" not in result.output and "Usage:" not in result.output


def test_usage_error_of_the_console_script() -> None:
    proc = subprocess.run([sys.executable, "-m", "detcli", "test", "--no-such-flag"], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: No such option: --no-such-flag — see 'det test --help'"]


def test_no_arguments_prints_help_and_exits_0() -> None:
    for argv in ([], ["config"]):
        result = invoke(*argv)
        assert result.exit_code == 0 and "Usage: det" in result.output


def test_help_groups_commands_main_first() -> None:
    out = invoke("--help").output
    panels = [line for line in out.splitlines() if line.startswith("╭─")]
    assert [p.strip("╭─╮ ") for p in panels] == ["Options", "Commands", "Datasets and results", "Checkpoints and setup"]
    commands = out[out.index("╭─ Commands"):out.index("╭─ Datasets")]
    names = [line.split()[1] for line in commands.splitlines()[1:-1] if line.split()[1:] and line[2] != " "]
    assert names == ["train", "test", "eval", "infer", "export-onnx", "export"]
    assert out.index("convert-dataset") > out.index("╭─ Datasets") and out.index("env ") > out.index("╭─ Checkpoints")


@pytest.mark.parametrize("argv", [["--help"], ["infer", "--help"], ["config", "list", "--help"], ["convert-dataset", "check", "--help"]])
def test_flags_show_no_bool_type(argv: list[str]) -> None:
    result = invoke(*argv)
    assert result.exit_code == 0 and "--help" in result.output
    assert "<bool>" not in result.output


def test_help_text_has_no_mid_sentence_breaks() -> None:
    root = typer.main.get_command(app)
    for name in ("test", "export-onnx", "convert-checkpoint", "publish"):
        assert "\n" not in root.commands[name].help, name
    assert root.commands["export-onnx"].help.startswith("Export RetinaNet / FCOS")
