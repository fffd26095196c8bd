"""Run environment: device choice, seeding, determinism, threads and package versions."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
import sys
from typing import Any

import numpy as np
import torch

from detcli.errors import DetError

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """Return ``torch.device(device)`` for ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        DetError: an unknown device string, CUDA requested without a usable GPU, or ``N`` out of range.
    """
    text = str(device).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DetError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        index = 0
        if ":" in text:
            suffix = text.split(":", 1)[1]
            if not suffix.isdigit():
                raise DetError(f"--device {device}: expected cuda:N with a GPU index N")
            index = int(suffix)
        if index >= torch.cuda.device_count():
            raise DetError(
                f"--device {device}: there is no GPU {index} (this machine has {torch.cuda.device_count()})"
            )
        return torch.device("cuda", index)
    raise DetError(f"--device {device}: unknown device (use cpu, cuda or cuda:N)")


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); with ``deterministic`` also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def configure_threads(workers_per_gpu: int) -> int:
    """Give torch the cores the DataLoader workers leave free (at least one); return the count.

    Respects an explicit ``OMP_NUM_THREADS``.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # a worker mostly waits on a full prefetch queue: count each as half a core
    threads = max(1, cores - max(0, workers_per_gpu) // 2)
    torch.set_num_threads(threads)
    return threads


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_env() -> dict[str, Any]:
    """Versions of python and the packages det depends on, and the CUDA situation."""
    import torchvision

    from detcli import __version__

    cupy = _version("cupy-cuda13x") or _version("cupy")
    return {
        "det": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pycocotools": _version("pycocotools"),
        "cupy": cupy,
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "torch_threads": torch.get_num_threads(),
        "ops_backend": _ops_backend(),
    }


def _ops_backend() -> str:
    from detcli.ops import active_backend_name

    try:
        return active_backend_name("cuda" if torch.cuda.is_available() else "cpu")
    except Exception as e:  # a broken CuPy install must not break `det env`
        return f"unavailable ({type(e).__name__}: {e})"
