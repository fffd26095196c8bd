"""DetDataset: what every det dataset shares (pipeline, classes, per-sample seeding, test mode).

A dataset index becomes a results dict (``img_info``, ``ann_info`` in training, ``img_prefix``,
``bbox_fields``, ``mask_fields``, a seeded ``rng``), which the pipeline turns into a
:class:`~detcli.data.sample.Sample` (train mode) or a list of them (test mode: one per test-time
augmentation).

Randomness: sample ``i`` of epoch ``e`` draws its augmentations from
``numpy.random.default_rng([seed, e, i])``. The loader's sampler passes :class:`SampleKey`
``(index, epoch, seed)`` so this holds with any number of (persistent) workers; a plain ``int``
index uses the dataset's own ``seed`` and ``epoch`` (see :meth:`DetDataset.set_epoch`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset

from detcli.data.sample import Sample
from detcli.data.transforms.compose import RNG_KEY, Compose
from detcli.data.transforms.loading import LoadImageFromFile
from detcli.errors import DatasetError

logger = logging.getLogger(__name__)

_MAX_RETRIES = 10


class SampleKey(NamedTuple):
    """What the sampler hands to ``dataset[...]``: the index and the seed of its augmentations."""

    index: int
    epoch: int
    seed: int


def load_class_names(classes: str | Sequence[str], where: str) -> tuple[str, ...]:
    """``classes`` as a tuple: a list/tuple of names, or a text file with one name per line."""
    if isinstance(classes, (str, Path)):
        path = Path(classes)
        if not path.is_file():
            raise DatasetError(f"{where}: classes file not found: {path}")
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if not names:
            raise DatasetError(f"{where}: classes file {path} is empty")
        return names
    names = tuple(str(c) for c in classes)
    if not names:
        raise DatasetError(f"{where}: classes must not be empty")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DatasetError(f"{where}: classes lists {', '.join(repr(d) for d in dup)} more than once")
    return names


class DetDataset(Dataset):
    """Base of det's detection datasets.

    Subclasses set ``classes``, ``cat_ids`` and implement ``__len__``, :meth:`get_img_info`,
    :meth:`get_ann_info`, the ``coco`` property and :meth:`fingerprint`; they may override
    :meth:`_prepare_results` to add data (e.g. an image rendered in memory).

    Args:
        pipeline: transforms (built or ``{type: ...}`` dicts), ending with ``Collect``.
        test_mode: return ``list[Sample]`` without annotations instead of ``Sample``.
        filter_empty_gt: drop images without ground truth (training only).
    """

    classes: tuple[str, ...]
    cat_ids: list[int]
    img_prefix: str | None = None

    def __init__(self, pipeline: Sequence[Callable[[dict], Any] | Mapping[str, Any]], test_mode: bool,
                 filter_empty_gt: bool) -> None:
        self.pipeline = Compose(pipeline)
        self.test_mode = test_mode
        self.filter_empty_gt = filter_empty_gt
        self.seed = 0
        self.epoch = 0

    # --- to implement -----------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_img_info(self, idx: int) -> dict[str, Any]:  # pragma: no cover - abstract
        """``{filename, height, width, id}`` of image ``idx``."""
        raise NotImplementedError

    def get_ann_info(self, idx: int) -> dict[str, Any]:  # pragma: no cover - abstract
        """``{bboxes float32 (N, 4) xyxy, labels int64 (N,), bboxes_ignore float32 (K, 4), masks}``."""
        raise NotImplementedError

    @property
    def coco(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[int]:
        """COCO image id of each index."""
        return [int(self.get_img_info(i)["id"]) for i in range(len(self))]

    def get_cat_ids(self, idx: int) -> list[int]:
        """Labels (contiguous, ``0..C-1``) present in image ``idx``."""
        return [int(v) for v in self.get_ann_info(idx)["labels"]]

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for ``dataset[int]`` (the loader passes it in :class:`SampleKey` instead)."""
        self.epoch = int(epoch)

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)

    def load_image(self, idx: int) -> np.ndarray:
        """The original image of index ``idx`` as BGR ``uint8 (H, W, 3)`` (for drawing results)."""
        results = self._prepare_results(idx, np.random.default_rng(0))
        return LoadImageFromFile()(results)["img"]

    def check_images(self, decode: bool = False) -> None:
        """Fail early on missing image files; datasets rendered in memory have nothing to check."""

    def _prepare_results(self, idx: int, rng: np.random.Generator) -> dict[str, Any]:
        results: dict[str, Any] = {
            "img_info": dict(self.get_img_info(idx)),
            "img_prefix": self.img_prefix,
            "bbox_fields": [],
            "mask_fields": [],
            "sample_idx": idx,
            RNG_KEY: rng,
        }
        if not self.test_mode:
            results["ann_info"] = self.get_ann_info(idx)
        return results

    def _run(self, idx: int, epoch: int, seed: int) -> Any:
        if not 0 <= idx < len(self):
            raise IndexError(f"dataset index {idx} out of range for {len(self)} images")
        rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, idx])
        return self.pipeline(self._prepare_results(idx, rng))

    def __getitem__(self, key: int | SampleKey) -> Sample | list[Sample]:
        if isinstance(key, tuple):
            idx, epoch, seed = int(key[0]), int(key[1]), int(key[2])
        else:
            idx, epoch, seed = int(key), self.epoch, self.seed
        if idx < 0:
            idx += len(self)
        if self.test_mode:
            out = self._run(idx, epoch, seed)
            if isinstance(out, Sample):
                return [out]
            if isinstance(out, list) and out and all(isinstance(s, Sample) for s in out):
                return out
            raise DatasetError(f"dataset index {idx}: the test pipeline must end with Collect (got {type(out).__name__})")
        # a transform may reject a sample (return None): draw another one, deterministically
        cur = idx
        retry_rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, idx, 1])
        for _ in range(_MAX_RETRIES):
            out = self._run(cur, epoch, seed)
            if isinstance(out, Sample):
                return out
            if out is not None:
                raise DatasetError(f"dataset index {cur}: the train pipeline must end with Collect "
                                   f"(got {type(out).__name__})")
            cur = int(retry_rng.integers(len(self)))
        raise DatasetError(f"dataset index {idx}: the pipeline rejected {_MAX_RETRIES} samples in a row")
