"""Fixtures: a private torch cache ($TORCH_HOME) and a local HTTP server on 127.0.0.1 (never the network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local_http import Server


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TORCH_HOME`` in a temporary folder; returns its ``hub/checkpoints`` cache (created)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    return cache


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[Server]:
    """A folder served over HTTP on 127.0.0.1 (``.url``, ``.root``); stopped after the test."""
    root = tmp_path / "served"
    root.mkdir()
    server = Server(root)
    try:
        yield server
    finally:
        server.close()
