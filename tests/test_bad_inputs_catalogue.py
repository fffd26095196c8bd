"""benchmarks/bad_inputs.py: the catalogue covers every subcommand group and its classifier follows the rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bad_inputs.py"


@pytest.fixture(scope="module")
def bad_inputs():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("bad_inputs", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bad_inputs"] = module
    spec.loader.exec_module(module)
    return module


def test_catalogue_covers_every_group(bad_inputs) -> None:  # noqa: ANN001
    cases = bad_inputs.catalogue()
    groups = {c.group for c in cases}
    assert groups == {"train", "test", "eval --gt --dt", "infer", "export onnx", "convert-dataset", "confusion-matrix",
                      "analyze-logs", "analyze-results", "browse-dataset", "optimize-anchors", "benchmark",
                      "convert-checkpoint", "publish", "config"}
    names = [(c.group, c.name) for c in cases]
    assert len(names) == len(set(names))  # unique, so EXTENDED can name them
    assert bad_inputs.EXTENDED <= set(names)
    default = [n for n in names if n not in bad_inputs.EXTENDED]
    assert 140 <= len(default) <= 160
    assert sum(c.payload for c in cases) >= 8  # malicious pickles through every loader


def test_classifier(bad_inputs) -> None:  # noqa: ANN001
    Case, classify = bad_inputs.Case, bad_inputs.classify
    bad, good, warn = Case("g", "n", []), Case("g", "n", [], should_fail=False), Case("g", "n", [], warn_ok=True)
    log = "00:01:02 INFO loading\n"
    assert classify(bad, 1, log + "error: x.yaml: broken; fix it\n", False)[0] == "one-line"
    assert classify(bad, 1, log + "error: a\nmore\n", False)[0] == "multi-line"
    assert classify(bad, 1, "Traceback (most recent call last):\n  ...\nValueError: x\n", False)[0] == "traceback/crash"
    assert classify(bad, 2, "Usage: det train\n", False)[0] == "traceback/crash"
    assert classify(bad, -11, "", False)[0] == "traceback/crash"
    assert classify(bad, 1, "error: refused\n", True) == ("traceback/crash", "PAYLOAD RAN: error: refused")
    assert classify(bad, None, "", False)[0] == "hang"
    assert classify(bad, 0, "done\n", False)[0] == "accepted"
    assert classify(warn, 0, "00:01:02 WARNING dropped 1 boxes\n", False)[0] == "one-line"
    assert classify(warn, 0, "done\n", False)[0] == "accepted"
    assert classify(good, 0, "done\n", False)[0] == "ok"
    assert classify(good, 1, "error: no\n", False)[0] == "refused"
