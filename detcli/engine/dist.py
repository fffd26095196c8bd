"""Rank awareness: the seams a later torchrun/DDP issue fills in.

Today det runs one process: :func:`get_dist_info` returns ``(0, 1)`` unless a
``torch.distributed`` process group was initialised by someone else. Only rank 0 writes logs,
checkpoints and the manifest (:func:`is_main_process`); test results are gathered across ranks
before evaluation (:func:`gather_results`, the identity with one process).
"""

from __future__ import annotations

from typing import TypeVar

import torch.distributed as torch_dist

T = TypeVar("T")


def get_dist_info() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0, the only rank that writes files."""
    return get_dist_info()[0] == 0


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
