"""README's two commands stay true: CI runs exactly README's test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command() -> str:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(lines) == 1, ".ci/run must hold exactly one test command line"
    return lines[0]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _ci_command() in readme


def test_readme_first_command_trains_evaluates_and_infers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "det train presets/quickstart.yaml" in readme
    assert "det test presets/quickstart.yaml" in readme
    assert "det infer" in readme
