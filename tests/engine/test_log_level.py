"""log_level: the level of det's logger during a run (text log and console)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import detcli.engine as engine
from detcli.errors import ConfigError

from engine_helpers import tiny_cfg


def _text_log(tmp_path: Path, level: str | None) -> str:
    cfg = tiny_cfg()
    if level is not None:
        cfg["log_level"] = level
    result = engine.train(cfg, work_dir=tmp_path / str(level), cfg_source="tiny.yaml", validate=False)
    assert result.text_log is not None
    return result.text_log.read_text()


def test_debug_lines_appear_and_info_lines_vanish(tmp_path: Path) -> None:
    before = logging.getLogger("detcli").level
    default = _text_log(tmp_path, None)
    assert " - INFO - training tiny on cpu" in default and " - DEBUG - " not in default
    debug = _text_log(tmp_path, "DEBUG")
    assert "detcli.engine.hooks - DEBUG - lr schedule {'policy': 'step'" in debug  # time - name - level - message
    assert "hooks in the order they run: LrUpdaterHook, CheckInvalidLossHook" in debug
    assert " - INFO - training tiny on cpu" in debug
    warning = _text_log(tmp_path, "WARNING")
    assert " - INFO - " not in warning and " - DEBUG - " not in warning
    assert logging.getLogger("detcli").level == before  # restored after the run


@pytest.mark.parametrize("value", ["debug", "VERBOSE", 10])
def test_invalid_log_level_names_the_key(tmp_path: Path, value: object) -> None:
    cfg = tiny_cfg(log_level=value)
    with pytest.raises(ConfigError, match=r"tiny.yaml: log_level: expected one of DEBUG, INFO, WARNING, ERROR"):
        engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    assert not (tmp_path / "run").exists()
