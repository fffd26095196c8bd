"""Fixtures for the kernel tests: the CPU build of the real .cu sources (kernels/testing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTING_DIR = Path(__file__).resolve().parents[2] / "kernels" / "testing"
sys.path.insert(0, str(TESTING_DIR))

import cpu_harness  # noqa: E402


@pytest.fixture(scope="session")
def cpu_kernels(tmp_path_factory: pytest.TempPathFactory) -> cpu_harness.KernelLibrary:
    if cpu_harness.compiler() is None:
        pytest.skip("no host C++ compiler (g++/clang++) to build kernels/testing")
    return cpu_harness.build(tmp_path_factory.mktemp("kernels"))
