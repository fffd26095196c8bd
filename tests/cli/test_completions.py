"""The shipped completion scripts are exactly what the CLI generates now."""

from __future__ import annotations

from pathlib import Path

import pytest

from detcli.cli.completion import SHELLS, command_tree, render

ROOT = Path(__file__).resolve().parents[2]
FILES = {"bash": "det.bash", "zsh": "_det", "fish": "det.fish"}


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_scripts_are_fresh(shell: str) -> None:
    shipped = (ROOT / "completions" / FILES[shell]).read_text()
    assert shipped == render(shell), (
        f"completions/{FILES[shell]} is stale: run `det completion {shell} > completions/{FILES[shell]}`"
    )


def test_tree_lists_every_subcommand_and_option() -> None:
    tree = command_tree()
    assert {"train", "test", "eval", "infer", "config", "env", "convert-dataset", "benchmark", "completion"} <= set(tree.children)
    train_opts = {o for opts, _, _ in tree.children["train"].options for o in opts}
    assert {"--work-dir", "--resume", "--cfg-options", "--device", "--no-validate", "--auto-scale-lr"} <= train_opts
    assert "show" in tree.children["config"].children


@pytest.mark.parametrize("shell", SHELLS)
def test_scripts_mention_nested_commands(shell: str) -> None:
    text = render(shell)
    for word in ("train", "convert-dataset", "shapes", "cfg-options", "score-thr"):
        assert word in text
