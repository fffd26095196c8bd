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


def _zoo_table_rows() -> dict[str, list[str]]:
    """README's "Model zoo" table: preset name -> its cells."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Model zoo", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells:
            rows[cells[0].strip("`")] = cells
    return rows


def test_readme_zoo_table_lists_every_preset_with_its_published_ap() -> None:
    from detcli.engine.zoo import list_zoo

    rows = _zoo_table_rows()
    presets = list_zoo()
    assert {p["name"] for p in presets} == set(rows), "README's Model zoo table must list exactly the shipped presets"
    for preset in presets:
        cells = rows[preset["name"]]
        for key, col in (("box_ap", 2), ("mask_ap", 3)):
            want = "–" if preset[key] is None else f"{preset[key]:.1f}"
            assert cells[col] == want, f"{preset['name']}: README says {key} {cells[col]!r}, the preset {want!r}"
