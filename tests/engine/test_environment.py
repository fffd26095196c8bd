"""Device resolution, seeding/determinism, threads, versions and the rank seams."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from detcli.engine.dist import gather_results, get_dist_info, is_main_process
from detcli.engine.environment import collect_env, configure_threads, resolve_device, set_random_seed
from detcli.errors import DetError


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(DetError, match="unknown device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(DetError, match=f"--device {name}: CUDA is not available"):
                resolve_device(name)


def test_seed_makes_all_generators_repeat() -> None:
    set_random_seed(11)
    a = (random.random(), float(np.random.rand()), torch.rand(2))
    set_random_seed(11)
    b = (random.random(), float(np.random.rand()), torch.rand(2))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


def test_deterministic_flag() -> None:
    try:
        set_random_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def test_threads_leave_room_for_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    try:
        assert configure_threads(0) == 4
        assert configure_threads(2) == 3
        assert configure_threads(16) == 1
    finally:
        torch.set_num_threads(before)


def test_collect_env_versions() -> None:
    env = collect_env()
    assert env["torch"] == torch.__version__
    assert {"det", "python", "torchvision", "numpy", "pycocotools", "cupy", "onnx", "cuda_available", "ops_backend"} <= set(env)


def test_single_process_rank_seams() -> None:
    assert get_dist_info() == (0, 1)
    assert is_main_process()
    assert gather_results([1, 2, 3, 4], 3) == [1, 2, 3]  # padding of the last batch dropped
