"""Helpers shared by the ops tests."""

from __future__ import annotations

import pytest
import torch


def cpu_and_cuda() -> list:
    """Devices to parametrise over: cpu always, cuda when present (skipped otherwise)."""
    return [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    ]
