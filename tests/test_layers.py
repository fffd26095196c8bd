"""Imports point down the layers: structures → ops → models → data/evaluation → engine → tools → cli."""

from __future__ import annotations

import ast
from pathlib import Path

import detcli

PACKAGE = Path(detcli.__file__).parent

RANK = {
    "errors": 0, "fileio": 0, "weights": 1, "registry": 0, "plugins": 0, "config": 0, "config_import": 0, "resources": 0,
    "__init__": 0, "__main__": 7,
    "structures": 1,
    "ops": 2,
    "models": 3,
    "data": 4, "evaluation": 4, "visualization": 4,
    "engine": 5,
    "tools": 6,
    "cli": 7,
}
CLI_ONLY = ("typer", "rich")


def _layer(parts: tuple[str, ...]) -> str:
    return parts[0].removesuffix(".py") if parts else "__init__"


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_imports_point_down() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        here = _layer(rel)
        if here not in RANK:
            violations.append(f"{path}: module outside the known layers")
            continue
        for name in _imports(ast.parse(path.read_text())):
            top = name.split(".")[0]
            if top in CLI_ONLY and here != "cli":
                violations.append(f"{'/'.join(rel)} imports {name} (only detcli.cli may)")
            if top != "detcli" or name == "detcli":
                continue
            target = name.split(".")[1]
            if target in RANK and RANK[target] > RANK[here]:
                violations.append(f"{'/'.join(rel)} (layer {here}) imports {name} (a higher layer)")
    assert not violations, "\n".join(violations)


def test_models_do_not_import_data_or_engine() -> None:
    for path in (PACKAGE / "models").rglob("*.py"):
        for name in _imports(ast.parse(path.read_text())):
            assert not name.startswith(("detcli.data", "detcli.engine", "detcli.evaluation")), f"{path}: {name}"


def test_engine_does_not_import_tools() -> None:
    """Tool algorithms (anchors, browse, analysis, benchmark, conversion) sit above the engine: the engine
    (training, testing, builders) must work without them, lazily imported or not."""
    assert (PACKAGE / "tools").is_dir()
    offenders = []
    for path in (PACKAGE / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for name in _imports(tree):
            if name == "detcli.tools" or name.startswith("detcli.tools."):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
        for node in ast.walk(tree):  # `from detcli import tools`
            if isinstance(node, ast.ImportFrom) and node.module == "detcli" and any(a.name == "tools" for a in node.names):
                offenders.append(f"{path.relative_to(PACKAGE)} imports detcli.tools")
    assert not offenders, "\n".join(offenders)


def test_rank_orders_engine_tools_cli() -> None:
    assert RANK["engine"] < RANK["tools"] < RANK["cli"] <= RANK["__main__"]
