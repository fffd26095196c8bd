"""Run the real CUDA kernels of ``kernels/*.cu`` on the CPU (no GPU, no CUDA toolkit needed).

``build()`` compiles ``driver.cpp`` (which ``#include``s ``../nms.cu`` and ``../roi_align.cu``) with the
host C++ compiler through ``shim.h`` into a shared library in a temporary directory and loads it with
ctypes. The wrappers below take and return NumPy arrays; they launch every block and every thread of
the grid exactly as the GPU launch would (see ``shim.h``). Used by ``tests/kernels``; run by hand with::

    python kernels/testing/cpu_harness.py       # builds, runs a smoke check, prints the library path
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NMS_BLOCK = 64
COMPILE_FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")


class HarnessError(RuntimeError):
    """The host compiler is missing, the build failed, or a kernel launch raised."""


def compiler() -> str | None:
    """Path of the host C++ compiler ($CXX, g++ or clang++), or None."""
    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class KernelLibrary:
    """The compiled driver; see ``driver.cpp`` for the C entry points."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        self._lib.det_last_error.restype = ctypes.c_char_p
        p = ctypes.c_void_p
        i, f, ll = ctypes.c_int, ctypes.c_float, ctypes.c_longlong
        self._lib.det_nms.argtypes = [p, i, f, p, p, p, i]
        self._lib.det_roi_align_forward.argtypes = [i, p, p, ll, i, i, i, i, i, f, i, i, p, i, i]
        self._lib.det_roi_align_backward.argtypes = [i, p, p, ll, i, i, i, i, i, f, i, i, p, i, i]

    def launch(self, function: str, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[object, ...]) -> None:
        """Launch kernel ``function`` like ``cupy.RawKernel.__call__(grid, block, args)``.

        ``args`` holds objects with ``data_ptr()`` (torch tensors) or ``ctypes.data`` (NumPy arrays)
        for pointers and NumPy scalars (int32/int64/float32) for values, as the CuPy backend passes them.
        """
        if len(block) != 1 or any(b != 1 for b in block[1:]):
            raise HarnessError(f"1-D blocks only, got {block}")
        dims = list(grid) + [1] * (2 - len(grid)) if function == "nms_mask" else [grid[0]]
        converted: list[object] = []
        for a in args:
            if hasattr(a, "data_ptr"):
                converted.append(ctypes.c_void_p(a.data_ptr()))
            elif isinstance(a, np.ndarray):
                converted.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int32):
                converted.append(ctypes.c_int(int(a)))
            elif isinstance(a, np.int64):
                converted.append(ctypes.c_longlong(int(a)))
            elif isinstance(a, np.float32):
                converted.append(ctypes.c_float(float(a)))
            else:
                raise HarnessError(f"{function}: unsupported kernel argument {a!r} (use NumPy scalars)")
        fn = getattr(self._lib, f"det_launch_{function}")
        fn.restype = ctypes.c_int
        self._check(fn(*[ctypes.c_int(d) for d in dims], ctypes.c_int(block[0]), *converted))

    def _check(self, status: int) -> None:
        if status != 0:
            raise HarnessError(self._lib.det_last_error().decode())

    def nms(self, boxes_sorted: np.ndarray, order: np.ndarray, threshold: float, gather_threads: int = 256) -> np.ndarray:
        """Kept entries of ``order`` (int64), in score order.

        Args:
            boxes_sorted: float32[n, 4] boxes already sorted by decreasing score.
            order: int64[n] original index of each sorted box.
            threshold: the float32 threshold passed to the kernel (already rounded down, see nms.cu).
        """
        boxes_sorted = np.ascontiguousarray(boxes_sorted, dtype=np.float32).reshape(-1, 4)
        order = np.ascontiguousarray(order, dtype=np.int64)
        n = boxes_sorted.shape[0]
        keep = np.full(max(n, 1), -7, dtype=np.int64)
        num_keep = np.full(1, -1, dtype=np.int32)
        self._check(self._lib.det_nms(
            boxes_sorted.ctypes.data, n, threshold, order.ctypes.data, keep.ctypes.data, num_keep.ctypes.data,
            gather_threads,
        ))
        return keep[: int(num_keep[0])].copy()

    def roi_align_forward(
        self, input: np.ndarray, rois: np.ndarray, pooled: tuple[int, int], spatial_scale: float,
        sampling_ratio: int, aligned: bool, grid: int = 3, block: int = 64,
    ) -> np.ndarray:
        """input float32/float16[N, C, H, W], rois float32[K, 5] → same dtype [K, C, PH, PW]."""
        input = np.ascontiguousarray(input)
        rois = np.ascontiguousarray(rois, dtype=np.float32).reshape(-1, 5)
        dtype = _dtype_code(input.dtype)
        _, channels, height, width = input.shape
        out = np.full((rois.shape[0], channels, *pooled), np.nan, dtype=input.dtype)
        self._check(self._lib.det_roi_align_forward(
            dtype, input.ctypes.data, rois.ctypes.data, out.size, channels, height, width, pooled[0], pooled[1],
            spatial_scale, sampling_ratio, int(aligned), out.ctypes.data, grid, block,
        ))
        return out

    def roi_align_backward(
        self, grad_output: np.ndarray, rois: np.ndarray, input_shape: tuple[int, int, int, int],
        spatial_scale: float, sampling_ratio: int, aligned: bool, grid: int = 3, block: int = 64,
    ) -> np.ndarray:
        """grad_output float32/float16[K, C, PH, PW] → float32 grad_input[N, C, H, W]."""
        grad_output = np.ascontiguousarray(grad_output)
        rois = np.ascontiguousarray(rois, dtype=np.float32).reshape(-1, 5)
        dtype = _dtype_code(grad_output.dtype)
        _, channels, height, width = input_shape
        grad_input = np.zeros(input_shape, dtype=np.float32)
        self._check(self._lib.det_roi_align_backward(
            dtype, grad_output.ctypes.data, rois.ctypes.data, grad_output.size, channels, height, width,
            grad_output.shape[2], grad_output.shape[3], spatial_scale, sampling_ratio, int(aligned),
            grad_input.ctypes.data, grid, block,
        ))
        return grad_input


def _dtype_code(dtype: np.dtype) -> int:
    if dtype == np.float32:
        return 0
    if dtype == np.float16:
        return 1
    raise HarnessError(f"unsupported dtype {dtype} (float32 or float16)")


def build(out_dir: str | Path | None = None) -> KernelLibrary:
    """Compile ``driver.cpp`` + the kernel sources and load the result."""
    cxx = compiler()
    if cxx is None:
        raise HarnessError("no host C++ compiler found (install g++ or set $CXX)")
    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="det-kernels-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libdet_kernels_cpu.so"
    cmd = [cxx, *COMPILE_FLAGS, "-I", str(HERE / "include"), "-include", str(HERE / "shim.h"),
           str(HERE / "driver.cpp"), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"building the CPU kernel harness failed:\n{' '.join(cmd)}\n{proc.stderr}")
    return KernelLibrary(lib)


if __name__ == "__main__":
    library = build()
    b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    kept = library.nms(b, np.arange(3), 0.5)
    assert kept.tolist() == [0, 2], kept
    print(library.path)
