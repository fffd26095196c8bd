"""Both kernel sources compile with NVRTC for every CUDA 13 architecture we ship, without a warning.

NVRTC needs no GPU. These tests skip only when CuPy is not importable; CI installs the `cuda` extra
(cupy-cuda13x, nvidia-cuda-nvrtc, nvidia-cuda-runtime), so they always run there.
"""

from __future__ import annotations

import pytest

pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy (the `cuda` extra) is not installed")

from detcli.errors import KernelError  # noqa: E402
from detcli.ops.nvrtc_build import CI_ARCHITECTURES, KERNEL_FILES, compile_kernel, compile_source  # noqa: E402


@pytest.mark.parametrize("arch", CI_ARCHITECTURES)
@pytest.mark.parametrize("name", KERNEL_FILES)
def test_kernel_compiles_without_diagnostics(name: str, arch: str) -> None:
    compiled = compile_kernel(name, arch)
    assert compiled.log == "", f"NVRTC diagnostics for {name} ({arch}):\n{compiled.log}"
    assert compiled.cubin[:4] == b"\x7fELF"  # a device binary
    assert f"--gpu-architecture={arch}" in compiled.options
    assert "--fmad=false" in compiled.options


@pytest.mark.parametrize(
    ("name", "function_names"),
    [
        ("nms.cu", [b"nms_mask", b"nms_gather_keep", b"nms_suppressed_by"]),
        (
            "roi_align.cu",
            [b"roi_align_forward_f32", b"roi_align_forward_f16", b"roi_align_backward_f32", b"roi_align_backward_f16"],
        ),
    ],
)
def test_cubin_exports_the_kernels_the_backend_launches(name: str, function_names: list[bytes]) -> None:
    cubin = compile_kernel(name, "sm_80").cubin
    for fn in function_names:
        assert fn in cubin


def test_the_log_check_catches_a_warning() -> None:
    # the same compile path reports a warning in the log, so an empty log is a real check
    src = 'extern "C" __global__ void k(float* a) { int unused = 3; a[0] = 1.0f; }'
    assert "unused" in compile_source(src, "warn.cu", "sm_80").log


def test_compile_error_is_a_kernel_error_with_the_log() -> None:
    with pytest.raises(KernelError, match=r"broken\.cu.*sm_75(.|\n)*undefined"):
        compile_source('extern "C" __global__ void k() { undefined_symbol(); }', "broken.cu", "sm_75")
