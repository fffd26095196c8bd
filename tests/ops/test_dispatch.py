"""Backend choice: DET_OPS, set_backend (--ops), use_backend (ONNX export) and the cupy errors."""

from __future__ import annotations

import pytest
import torch

from detcli.errors import KernelError
from detcli.ops import (
    BACKEND_NAMES,
    active_backend_name,
    dispatch,
    nms,
    requested_backend,
    roi_align,
    set_backend,
    use_backend,
)
from detcli.ops.dispatch import TORCH_NMS_MIN_BOXES, backend_for


def test_names() -> None:
    assert BACKEND_NAMES == ("auto", "cupy", "torch", "torchvision")


def test_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert requested_backend() == "auto"
    monkeypatch.setenv("DET_OPS", "torch")
    assert requested_backend() == "torch"
    set_backend("torchvision")
    assert requested_backend() == "torchvision"
    with use_backend("torch"):
        assert requested_backend() == "torch"
        with use_backend("auto"):
            assert requested_backend() == "auto"
        assert requested_backend() == "torch"
    assert requested_backend() == "torchvision"
    set_backend(None)
    assert requested_backend() == "torch"


def test_unknown_names_are_kernel_errors_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KernelError, match=r"--ops 'torchvison'.*did you mean 'torchvision'"):
        set_backend("torchvison")
    monkeypatch.setenv("DET_OPS", "cupi")
    with pytest.raises(KernelError, match=r"DET_OPS='cupi'.*did you mean 'cupy'"):
        requested_backend()
    with pytest.raises(KernelError, match="choose from"):
        with use_backend("gpu"):
            pass


def test_auto_on_cpu_picks_by_size() -> None:
    small, large = torch.zeros(10, 4), torch.zeros(TORCH_NMS_MIN_BOXES, 4)
    assert backend_for(small, num_boxes=10).name == "torchvision"
    assert backend_for(large, num_boxes=TORCH_NMS_MIN_BOXES).name == "torch"
    assert backend_for(torch.zeros(1, 3, 4, 4)).name == "torch"  # roi_align: torchvision's kernel over threads
    assert active_backend_name("cpu").startswith("torchvision")


def test_forced_cupy_on_cpu_tensor_is_a_clear_error() -> None:
    set_backend("cupy")
    boxes = torch.tensor([[0.0, 0, 1, 1]])
    with pytest.raises(KernelError, match=r"'cupy' needs CUDA tensors, got a tensor on cpu"):
        nms(boxes, torch.tensor([1.0]), 0.5)
    with pytest.raises(KernelError, match="needs CUDA tensors"):
        roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0.0, 0, 2, 2]]), 2)


def test_forced_cupy_without_cupy_or_gpu_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeCuda:
        is_cuda = True
        dtype = torch.float32
        device = "cuda:0"

    monkeypatch.setattr(dispatch, "_cupy_reason", lambda: "CuPy is not importable (ImportError); fix: pip install ...")
    set_backend("cupy")
    with pytest.raises(KernelError, match=r"'cupy' cannot run: CuPy is not importable.*pip install"):
        backend_for(FakeCuda())  # type: ignore[arg-type]


def test_auto_on_cuda_without_cupy_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    class FakeCuda:
        is_cuda = True
        dtype = torch.float32

    monkeypatch.setattr(dispatch, "_cupy_reason", lambda: "torch sees no CUDA device")
    monkeypatch.setattr(dispatch, "_warned_fallback", False)
    with caplog.at_level("WARNING", logger="detcli.ops.dispatch"):
        assert backend_for(FakeCuda()).name == "torchvision"  # type: ignore[arg-type]
        assert backend_for(FakeCuda()).name == "torchvision"  # type: ignore[arg-type]
    assert [r.message for r in caplog.records].count(
        "CuPy kernels unavailable (torch sees no CUDA device); using torchvision.ops"
    ) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_unavailable_reason_without_gpu() -> None:
    from detcli.ops.cupy_backend import unavailable_reason

    assert unavailable_reason() is not None
    assert active_backend_name("cuda") == "torchvision"


def test_cupy_backend_rejects_cpu_tensors_directly() -> None:
    from detcli.ops import cupy_backend

    with pytest.raises(KernelError, match="boxes is on cpu"):
        cupy_backend.nms(torch.zeros(2, 4), torch.zeros(2), 0.5)
    with pytest.raises(KernelError, match="input is on cpu"):
        cupy_backend.roi_align(torch.zeros(1, 1, 2, 2), torch.zeros(1, 5), (1, 1), 1.0, 0, True)
