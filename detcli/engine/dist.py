"""Distributed training and testing on ``torch.distributed`` (launched by torchrun or Slurm).

One process per device. :func:`distributed` initialises the default process group from the
launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``; or ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODELIST``) with
the ``nccl`` backend on CUDA and ``gloo`` on CPU, and destroys it again on exit, errors included.
:func:`get_dist_info` returns ``(rank, world_size)`` (``(0, 1)`` without a group). Only rank 0
writes logs, checkpoints and the manifest (:func:`is_main_process`); test results are gathered
across ranks before evaluation (:func:`gather_results`) and evaluated once on rank 0
(:func:`run_on_main`, which broadcasts the result).

:func:`launch_local` re-runs a ``det`` command as ``python -m torch.distributed.run
--nproc_per_node N -m detcli ...`` on this machine (``det train --nproc N``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from detcli.errors import ConfigError, DetError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``--launcher`` values; ``auto`` picks ``pytorch`` when torchrun's variables are set, else ``none``.
LAUNCHERS = ("auto", "none", "pytorch", "torchrun", "slurm")
DEFAULT_PORT = 29500
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def get_dist_info() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0, the only rank that writes files."""
    return get_dist_info()[0] == 0


# --------------------------------------------------------------------------- launch environment


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a distributed job.

    Attributes:
        rank: global rank; world_size: number of processes; local_rank: rank on this node.
        master_addr, master_port: the rendezvous address of rank 0.
        launcher: ``pytorch`` (torchrun) or ``slurm``.
    """

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str


def _int_env(env: Mapping[str, str], key: str, launcher: str) -> int:
    value = env.get(key)
    if value is None:
        raise ConfigError(f"--launcher {launcher}: the environment variable {key} is not set (start det with "
                          f"{'torchrun' if launcher == 'pytorch' else 'srun'}, or use --launcher none)")
    try:
        return int(value)
    except ValueError as e:
        raise ConfigError(f"--launcher {launcher}: {key}={value!r} is not an integer") from e


def first_slurm_host(nodelist: str) -> str:
    """The first host of a ``SLURM_NODELIST`` (``scontrol show hostnames`` when available).

    Parses the simple forms itself: ``node1,node2``, ``node[3-5,7]``, ``gpu-[01-04]-a``.

    Example:
        >>> first_slurm_host("node[03-05,9],login1")
        'node03'
    """
    nodelist = nodelist.strip()
    if not nodelist:
        raise ConfigError("--launcher slurm: SLURM_NODELIST is empty")
    if shutil.which("scontrol"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.split()
            if out:
                return out[0]
    # first entry of the top-level comma list (commas inside [...] do not split)
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end]
    m = re.match(r"^([^\[]*)\[([^\]]+)\](.*)$", first)
    if not m:
        return first
    prefix, ranges, suffix = m.groups()
    lo = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{lo}{suffix}"


def detect_launcher(env: Mapping[str, str] | None = None) -> str:
    """``pytorch`` when torchrun's variables are all set, else ``none``."""
    env = os.environ if env is None else env
    return "pytorch" if all(k in env for k in TORCHRUN_VARS) else "none"


def read_dist_env(launcher: str, env: Mapping[str, str] | None = None) -> DistEnv | None:
    """The :class:`DistEnv` of ``launcher`` from ``env`` (default ``os.environ``); None for ``none``.

    Raises:
        ConfigError: unknown launcher, or a variable it needs is missing/malformed.
    """
    env = os.environ if env is None else env
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: unknown launcher '{launcher}' (choose from {', '.join(LAUNCHERS)})")
    if launcher == "auto":
        launcher = detect_launcher(env)
    if launcher == "none":
        return None
    if launcher in ("pytorch", "torchrun"):
        rank = _int_env(env, "RANK", "pytorch")
        world = _int_env(env, "WORLD_SIZE", "pytorch")
        local = int(env.get("LOCAL_RANK", "0"))
        addr = env.get("MASTER_ADDR", "127.0.0.1")
        port = int(env.get("MASTER_PORT", DEFAULT_PORT))
        return DistEnv(rank, world, local, addr, port, "pytorch")
    rank = _int_env(env, "SLURM_PROCID", "slurm")
    world = _int_env(env, "SLURM_NTASKS", "slurm")
    local = int(env.get("SLURM_LOCALID", "0"))
    addr = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_NODELIST", env.get("SLURM_JOB_NODELIST", "")))
    port = int(env.get("MASTER_PORT", DEFAULT_PORT))
    return DistEnv(rank, world, local, addr, port, "slurm")


def _backend(device: str, requested: str | None) -> str:
    if requested:
        return requested
    return "nccl" if device.startswith("cuda") else "gloo"


@contextlib.contextmanager
def distributed(launcher: str = "auto", device: str = "cpu", backend: str | None = None,
                timeout_s: float = 1800.0) -> Iterator[str]:
    """Initialise the default process group for ``launcher``; yield the device this rank uses.

    With one process (``none``, or an already initialised group) it does nothing and yields
    ``device``. Otherwise it sets ``MASTER_ADDR/PORT``, ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``,
    picks ``cuda:LOCAL_RANK`` for ``device='cuda'``, initialises ``nccl`` (CUDA) or ``gloo`` (CPU),
    quiets INFO logs on ranks > 0 and destroys the group on exit, also after an error.

    Raises:
        ConfigError: bad launcher environment.
        DetError: the process group could not be initialised.
    """
    info = read_dist_env(launcher)
    if info is None or (torch_dist.is_available() and torch_dist.is_initialized()):
        yield device
        return
    if not torch_dist.is_available():
        raise DetError("this torch build has no torch.distributed support; run with --launcher none")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DetError(f"--device {device}: CUDA is not available; use --device cpu (gloo backend)")
        device = f"cuda:{info.local_rank % torch.cuda.device_count()}" if device == "cuda" else device
        torch.cuda.set_device(torch.device(device))
    os.environ.update({"MASTER_ADDR": info.master_addr, "MASTER_PORT": str(info.master_port), "RANK": str(info.rank),
                       "WORLD_SIZE": str(info.world_size), "LOCAL_RANK": str(info.local_rank)})
    name = _backend(device, backend)
    try:
        torch_dist.init_process_group(name, init_method="env://", rank=info.rank, world_size=info.world_size,
                                      timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DetError(f"could not join the process group at {info.master_addr}:{info.master_port} as rank "
                       f"{info.rank}/{info.world_size} ({name}): {e}; check MASTER_ADDR/MASTER_PORT") from e
    package_logger = logging.getLogger("detcli")
    old_level = package_logger.level
    if info.rank != 0:
        package_logger.setLevel(logging.WARNING)
    logger.info("distributed: rank %d of %d (local rank %d) via %s, backend %s, master %s:%d", info.rank,
                info.world_size, info.local_rank, info.launcher, name, info.master_addr, info.master_port)
    finished = False
    try:
        yield device
        finished = True
    finally:
        package_logger.setLevel(old_level)
        if finished:
            # every rank reaches the end before any tears gloo down (a rank leaving while another
            # still talks to it aborts the process at exit)
            with contextlib.suppress(Exception):
                torch_dist.barrier()
        with contextlib.suppress(Exception):
            torch_dist.destroy_process_group()


# --------------------------------------------------------------------------- collectives


def reduce_mean_dict(values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average scalar tensors across ranks (one all-reduce; identity with one process).

    Every rank must pass the same keys in the same order.
    """
    _, world_size = get_dist_info()
    if world_size == 1 or not values:
        return dict(values)
    keys = list(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    torch_dist.all_reduce(stacked)
    stacked /= world_size
    return {k: stacked[i] for i, k in enumerate(keys)}


def broadcast_object(obj: T | None, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (identity with one process)."""
    _, world_size = get_dist_info()
    if world_size == 1:
        return obj  # type: ignore[return-value]
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    An exception on rank 0 is re-raised on every rank (as :class:`DetError` on the others), so no
    rank waits forever.
    """
    rank, world_size = get_dist_info()
    if world_size == 1:
        return fn()
    payload: tuple[bool, Any] = (True, None)
    if rank == 0:
        try:
            payload = (True, fn())
        except Exception as e:  # noqa: BLE001  (sent to the other ranks, then re-raised)
            payload = (False, e)
    ok, value = broadcast_object(payload)
    if not ok:
        if rank == 0:
            raise value
        raise DetError(f"rank 0 failed: {value}")
    return value  # type: ignore[no-any-return]


def barrier() -> None:
    """Wait for every rank (no-op with one process)."""
    if get_dist_info()[1] > 1:
        torch_dist.barrier()


def gather_results(results: list[T], size: int) -> list[T]:
    """Collect per-rank results into dataset order and drop the padding of the last batch.

    Args:
        results: this rank's results in the order it processed its indices.
        size: the dataset length.

    Returns:
        The first ``size`` results in dataset order (with one process: ``results[:size]``).
    """
    rank, world_size = get_dist_info()
    if world_size == 1:
        return results[:size]
    gathered: list[list[T] | None] = [None] * world_size
    torch_dist.all_gather_object(gathered, results)
    # samplers hand rank r the indices r, r + world, r + 2 * world, ...: interleave them back
    ordered: list[T] = []
    for chunk in zip(*[g for g in gathered if g is not None]):
        ordered.extend(chunk)
    return ordered[:size]


# --------------------------------------------------------------------------- local re-launch


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``.

    Example:
        >>> strip_option(["train", "p.yaml", "--nproc", "2", "--seed=1"], "--nproc")
        ['train', 'p.yaml', '--seed=1']
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        if arg.startswith(option + "="):
            continue
        out.append(arg)
    return out


def launch_local(nproc: int, det_args: Sequence[str], master_port: int | None = None) -> int:
    """Run ``det <det_args>`` as ``nproc`` processes on this machine through torch.distributed.run.

    Args:
        nproc: processes (one per GPU, or CPU processes sharing the cores).
        det_args: the command line after ``det`` (e.g. ``["train", "preset.yaml", ...]``), without ``--nproc``.
        master_port: rendezvous port on 127.0.0.1; default a free one.

    Returns:
        The exit code of the launch (0 when every rank succeeded).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    port = master_port or free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "detcli", *det_args]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env and "cuda" not in " ".join(det_args):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))  # CPU ranks share the cores
    logger.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode


__all__ = [
    "LAUNCHERS",
    "DistEnv",
    "barrier",
    "broadcast_object",
    "detect_launcher",
    "distributed",
    "first_slurm_host",
    "free_port",
    "gather_results",
    "get_dist_info",
    "is_main_process",
    "launch_local",
    "read_dist_env",
    "reduce_mean_dict",
    "run_on_main",
    "strip_option",
]
