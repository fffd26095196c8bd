"""Ops tests: the case generators of kernels/testing on sys.path, and a clean backend choice per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "kernels" / "testing"))


@pytest.fixture(autouse=True)
def _reset_backend(monkeypatch: pytest.MonkeyPatch):
    from detcli.ops import set_backend

    monkeypatch.delenv("DET_OPS", raising=False)
    set_backend(None)
    yield
    set_backend(None)
