"""Compile the CUDA sources in ``kernels/`` with NVRTC (no GPU needed to compile).

The same :func:`compile_kernel` serves the CuPy backend at run time (one compile per source and GPU
architecture, cached in memory and on disk) and the CI test that compiles every source for
``sm_75``, ``sm_80`` and ``sm_90`` and fails on any diagnostic.

What must be installed (the ``cuda`` extra): ``cupy-cuda13x`` (its ``cupy_backends.cuda.libs.nvrtc``
binding), ``nvidia-cuda-nvrtc`` 13.x (``libnvrtc.so.13``; the CuPy wheel does not ship it) and
``nvidia-cuda-runtime`` 13.x for the ``cuda_fp16.h`` header, or a CUDA 13 toolkit instead of the
last two (``$CUDA_PATH``/``/usr/local/cuda``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from detcli.errors import KernelError
from detcli.resources import kernel_source

logger = logging.getLogger(__name__)

KERNEL_FILES = ("nms.cu", "roi_align.cu")
CI_ARCHITECTURES = ("sm_75", "sm_80", "sm_90")
INSTALL_HINT = 'pip install "cupy-cuda13x>=13" "nvidia-cuda-nvrtc==13.*" "nvidia-cuda-runtime==13.*"'


@dataclass(frozen=True)
class CompiledKernel:
    """One NVRTC compilation.

    Attributes:
        name: the source file (``nms.cu``).
        arch: the real architecture compiled for (``sm_80``).
        cubin: the device binary.
        log: NVRTC's program log, stripped (empty when there was no diagnostic).
        options: the compiler options used.
    """

    name: str
    arch: str
    cubin: bytes
    log: str
    options: tuple[str, ...]


def cuda_include_dir() -> Path:
    """Directory holding ``cuda_fp16.h`` (pip ``nvidia-cuda-runtime`` or a CUDA toolkit).

    Raises:
        KernelError: no CUDA headers were found; the message names the package to install.
    """
    candidates: list[Path] = []
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        found = find_nvidia_header_directory("cudart")
        if found:
            candidates.append(Path(found))
    except Exception as e:  # pathfinder missing or failing: try the toolkit locations
        logger.debug("cuda.pathfinder could not locate the CUDA headers: %s", e)
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    for c in candidates:
        if (c / "cuda_fp16.h").is_file():
            return c
    raise KernelError(
        "cannot find the CUDA header cuda_fp16.h needed to compile kernels/roi_align.cu "
        f"(looked in: {', '.join(str(c) for c in candidates)}); fix: {INSTALL_HINT}, or set $CUDA_PATH"
    )


def nvrtc_options(arch: str) -> tuple[str, ...]:
    """NVRTC options: real architecture, no fused multiply-add (bit-identical IoU and RoIAlign sums)."""
    return (
        f"--gpu-architecture={arch}",
        "--std=c++17",
        "--fmad=false",
        f"--include-path={cuda_include_dir()}",
    )


def _nvrtc():  # type: ignore[no-untyped-def]
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as e:
        raise KernelError(f"the CuPy kernels need CuPy's NVRTC binding, which is not importable ({e}); fix: {INSTALL_HINT}") from e
    try:
        nvrtc.getVersion()
    except Exception as e:
        raise KernelError(f"libnvrtc could not be loaded ({e}); fix: {INSTALL_HINT}") from e
    return nvrtc


def compile_kernel(name: str, arch: str) -> CompiledKernel:
    """Compile ``kernels/<name>`` for ``arch`` (``"sm_80"``) and return the cubin and the log.

    Raises:
        KernelError: NVRTC is missing, or the source does not compile (the message holds the log).
    """
    return compile_source(kernel_source(name), name, arch)


def compile_source(source: str, name: str, arch: str) -> CompiledKernel:
    """Compile CUDA ``source`` (reported as ``name``) for ``arch`` with :func:`nvrtc_options`."""
    nvrtc = _nvrtc()
    options = nvrtc_options(arch)
    program = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(program, list(options))
        except Exception as e:
            log = nvrtc.getProgramLog(program)
            raise KernelError(f"NVRTC failed to compile kernels/{name} for {arch}:\n{log}") from e
        log = nvrtc.getProgramLog(program).strip().strip("\x00").strip()
        cubin = nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    return CompiledKernel(name=name, arch=arch, cubin=bytes(cubin), log=log, options=options)


def cached_cubin(name: str, arch: str) -> Path:
    """Path of the cubin of ``kernels/<name>`` for ``arch``, compiling it on first use.

    The file lives in ``$DET_CACHE_DIR`` (default ``~/.cache/det``)/``kernels`` and is keyed by a hash
    of the source, the options and the NVRTC version, so an edited kernel is recompiled.
    """
    nvrtc = _nvrtc()
    source = kernel_source(name)
    key = hashlib.sha256(
        "\n".join([source, *nvrtc_options(arch), repr(nvrtc.getVersion())]).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("DET_CACHE_DIR", Path.home() / ".cache" / "det")) / "kernels"
    path = cache / f"{Path(name).stem}-{arch}-{key}.cubin"
    if not path.is_file():
        compiled = compile_kernel(name, arch)
        if compiled.log:
            logger.warning("NVRTC diagnostics for kernels/%s (%s):\n%s", name, arch, compiled.log)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(compiled.cubin)
        tmp.replace(path)
        logger.info("compiled kernels/%s for %s -> %s", name, arch, path)
    return path
