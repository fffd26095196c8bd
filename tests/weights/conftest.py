"""Fixtures: a private torch cache ($TORCH_HOME) and a local HTTP server on 127.0.0.1 (never the network)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TORCH_HOME`` in a temporary folder; returns its ``hub/checkpoints`` cache (created)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    return cache


class Server:
    def __init__(self, root: Path) -> None:
        handler = lambda *a, **k: QuietHandler(*a, directory=str(root), **k)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.root = root
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


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
