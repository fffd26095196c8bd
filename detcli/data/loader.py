"""Batching: Batch, collate, the seeded sharding sampler and build_dataloader.

Order and augmentations are pure functions of ``(seed, epoch)``: :class:`DetSampler` shuffles
with ``torch.Generator().manual_seed(seed + epoch)`` and hands each index to the dataset as a
:class:`~detcli.data.base.SampleKey` ``(index, epoch, seed)``, so neither the number of workers
nor persistent workers change what a sample looks like, and a resumed run replays them.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detcli.data.base import SampleKey
from detcli.data.sample import Sample
from detcli.structures import GroundTruth, ImageBatch, ImageMeta

#: Batches are padded to a multiple of this (the largest FPN stride in the presets).
SIZE_DIVISOR = 32


@dataclass
class Batch:
    """A collated batch.

    In test mode each dataset item is a list of augmented samples; they are flattened in order
    and ``num_augs[k]`` says how many consecutive entries belong to source image ``k``
    (:meth:`groups` gives the slices). In train mode ``num_augs`` is all ones.

    Attributes:
        images: padded ``Tensor[B, 3, H, W]`` with each image's valid size.
        metas: one ``ImageMeta`` per entry.
        targets: one ``GroundTruth`` per entry, or None when the samples carry none.
        num_augs: entries per source image (sums to ``B``).
    """

    images: ImageBatch
    metas: list[ImageMeta]
    targets: list[GroundTruth] | None
    num_augs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.num_augs:
            self.num_augs = [1] * len(self.metas)
        if sum(self.num_augs) != len(self.metas) or len(self.metas) != len(self.images):
            raise ValueError(f"Batch: {len(self.images)} images, {len(self.metas)} metas, num_augs {self.num_augs}")

    def __len__(self) -> int:
        return len(self.metas)

    def groups(self) -> list[slice]:
        """Per source image, the slice of its entries (test-time augmentations)."""
        out, start = [], 0
        for n in self.num_augs:
            out.append(slice(start, start + n))
            start += n
        return out

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        targets = None if self.targets is None else [t.to(device) for t in self.targets]
        return Batch(self.images.to(device, non_blocking=non_blocking), list(self.metas), targets,
                     list(self.num_augs))

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True)."""
        images = ImageBatch(self.images.tensor.pin_memory(), list(self.images.image_sizes))
        return Batch(images, self.metas, self.targets, self.num_augs)


def collate(samples: Sequence[Sample | Sequence[Sample]], size_divisor: int = SIZE_DIVISOR) -> Batch:
    """Stack samples (train) or lists of augmented samples (test) into a :class:`Batch`.

    Images are zero-padded at the bottom/right to a common size, a multiple of ``size_divisor``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    flat: list[Sample] = []
    num_augs: list[int] = []
    for item in samples:
        group = [item] if isinstance(item, Sample) else list(item)
        if not group or not all(isinstance(s, Sample) for s in group):
            raise TypeError(f"collate expects Sample or list[Sample], got {type(item).__name__}")
        flat.extend(group)
        num_augs.append(len(group))
    images = ImageBatch.from_tensors([s.image for s in flat], size_divisor=size_divisor)
    gts = [s.gt for s in flat]
    targets = None if any(g is None for g in gts) else gts  # type: ignore[misc]
    return Batch(images, [s.meta for s in flat], targets, num_augs)  # type: ignore[arg-type]


class DetSampler(Sampler[SampleKey]):
    """Shuffled (or ordered) indices, sharded across ``num_replicas`` ranks like DistributedSampler.

    The permutation depends only on ``(seed, epoch)``. The list is padded by repeating its head
    to a multiple of ``num_replicas`` (or trimmed with ``drop_last``); rank ``r`` takes entries
    ``r, r + R, r + 2R, ...``.

    Args:
        dataset_len: number of items.
        shuffle: shuffle each epoch.
        seed: base seed (shared by all ranks).
        epoch: starting epoch; change it with :meth:`set_epoch`.
        num_replicas: number of ranks.
        rank: this rank.
        drop_last: trim to a multiple of ``num_replicas`` instead of padding.
        group_flags: per item a group id (e.g. :func:`aspect_ratio_flags`: 1 for landscape, 0 for
            portrait), or None. With groups and ``shuffle``, every chunk of ``batch_size * num_replicas``
            consecutive entries comes from one group (each group is padded with its own items to a
            multiple of the chunk), and the chunks are shuffled: each rank's batch, and the union of
            the ranks' batches, holds images of one group, like mmdet's (Distributed)GroupSampler.
        batch_size: ``samples_per_gpu`` (used with ``group_flags``).
    """

    def __init__(self, dataset_len: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False,
                 group_flags: Sequence[int] | None = None, batch_size: int = 1) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
        if group_flags is not None and len(group_flags) != dataset_len:
            raise ValueError(f"group_flags has {len(group_flags)} entries for {dataset_len} items")
        self.group_flags = [int(f) for f in group_flags] if group_flags is not None and shuffle else None
        self.chunk = max(1, int(batch_size)) * num_replicas
        self.dataset_len = dataset_len
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        if drop_last and dataset_len % num_replicas:
            self.num_samples = dataset_len // num_replicas
        else:
            self.num_samples = math.ceil(dataset_len / num_replicas)
        if self.group_flags is not None:
            sizes = [self.group_flags.count(g) for g in sorted(set(self.group_flags))]
            self.num_samples = sum(math.ceil(n / self.chunk) * self.chunk for n in sizes) // num_replicas
        self.total_size = self.num_samples * num_replicas
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Switch to ``epoch``; skip its first ``start`` indices of this rank (mid-epoch resume)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        self.epoch = int(epoch)
        self.start = int(start)

    def indices(self) -> list[int]:
        """This rank's dataset indices for the current epoch."""
        if self.group_flags is not None:
            order = self._grouped_order()
        elif self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        if self.total_size > len(order) and order:
            reps = math.ceil((self.total_size - len(order)) / len(order))
            order = order + (order * reps)[: self.total_size - len(order)]
        order = order[: self.total_size]
        return order[self.rank: self.total_size: self.num_replicas]

    def _grouped_order(self) -> list[int]:
        """Chunks of ``batch_size * num_replicas`` indices of one group each, in shuffled order."""
        assert self.group_flags is not None
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        chunks: list[list[int]] = []
        for flag in sorted(set(self.group_flags)):
            members = [i for i, f in enumerate(self.group_flags) if f == flag]
            members = [members[j] for j in torch.randperm(len(members), generator=g).tolist()]
            padded = math.ceil(len(members) / self.chunk) * self.chunk
            members = (members * math.ceil(padded / len(members)))[:padded]
            chunks.extend(members[k: k + self.chunk] for k in range(0, padded, self.chunk))
        return [i for c in torch.randperm(len(chunks), generator=g).tolist() for i in chunks[c]]

    def __iter__(self) -> Iterator[SampleKey]:
        return iter(SampleKey(i, self.epoch, self.seed) for i in self.indices()[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def aspect_ratio_flags(dataset: Any) -> list[int]:
    """Per image 1 when ``width / height > 1`` else 0, from ``dataset.get_img_info(i)`` (mmdet's ``flag``)."""
    flags = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        flags.append(int(float(info["width"]) / max(float(info["height"]), 1e-6) > 1))
    return flags


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` of a worker from ``(seed, rank, worker_id)``.

    det's transforms draw from the per-sample generator instead; this keeps custom transforms
    that use the global generators reproducible too.
    """
    worker_seed = (num_workers * rank + worker_id + seed) % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


def build_dataloader(
    dataset: Dataset,
    samples_per_gpu: int,
    workers_per_gpu: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
    persistent_workers: bool = False,
    pin_memory: bool | None = None,
    group_flags: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` with a :class:`DetSampler` and :func:`collate`.

    Args:
        samples_per_gpu: batch size per rank.
        workers_per_gpu: worker processes per rank (0: load in the main process).
        shuffle: shuffle every epoch (call ``loader.sampler.set_epoch(e)`` before each epoch).
        seed: order and augmentation seed.
        epoch: first epoch.
        drop_last: drop the last incomplete batch.
        num_replicas: number of ranks (DDP); ``rank``: this rank.
        persistent_workers: keep workers alive between epochs (only with workers).
        pin_memory: pin host memory; None: only when CUDA is available.
        group_flags: batch images of one group only (see :class:`DetSampler`; e.g. :func:`aspect_ratio_flags`).
    """
    if samples_per_gpu < 1:
        raise ValueError(f"samples_per_gpu must be >= 1, got {samples_per_gpu}")
    if workers_per_gpu < 0:
        raise ValueError(f"workers_per_gpu must be >= 0, got {workers_per_gpu}")
    sampler = DetSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch,  # type: ignore[arg-type]
                         num_replicas=num_replicas, rank=rank, group_flags=group_flags, batch_size=samples_per_gpu)
    init = functools.partial(worker_init_fn, num_workers=workers_per_gpu, rank=rank, seed=seed)
    return DataLoader(
        dataset,
        batch_size=samples_per_gpu,
        sampler=sampler,
        num_workers=workers_per_gpu,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        worker_init_fn=init if workers_per_gpu > 0 else None,
        persistent_workers=persistent_workers and workers_per_gpu > 0,
    )
