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
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from torch.utils.data import Dataset

from detcli.data.sample import Sample
from detcli.data.transforms.compose import RNG_KEY, Compose
from detcli.data.transforms.loading import IMAGE_FIX, LoadImageFromFile, image_file_problem
from detcli.errors import DatasetError
from detcli.fileio import read_image_file

logger = logging.getLogger(__name__)

_MAX_RETRIES = 10

#: Training drops images whose shorter side is below this (mmdet ``_filter_imgs(min_size=32)``).
MIN_IMAGE_SIZE = 32


class SampleKey(NamedTuple):
    """What the sampler hands to ``dataset[...]``: the index and the seed of its augmentations."""

    index: int  # type: ignore[assignment]
    epoch: int
    seed: int


def load_class_names(classes: str | Sequence[str], where: str) -> tuple[str, ...]:
    """``classes`` as a tuple: a list/tuple of names, or a text file with one name per line."""
    if isinstance(classes, (str, Path)):
        path = Path(classes)
        if not path.is_file():
            raise DatasetError(f"{where}: classes file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DatasetError(f"{where}: classes file {path} is not UTF-8 text (byte {e.start}); "
                               "give a text file with one class name per line") from e
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
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

    def load_results(self, key: SampleKey) -> dict[str, Any]:
        """The results dict the pipeline makes of ``key`` (a training pipeline that stops before
        ``Collect``, e.g. ``LoadImageFromFile`` and ``LoadAnnotations``): what
        :class:`~detcli.data.wrappers.MultiImageMixDataset` feeds its own pipeline with.

        Raises:
            DatasetError: the pipeline rejected the sample or ended with ``Collect``.
        """
        idx, epoch, seed = int(key[0]), int(key[1]), int(key[2])
        if idx < 0:
            idx += len(self)
        out = self._run(idx, epoch, seed)
        if out is None:
            raise DatasetError(f"dataset index {idx}: the loading pipeline rejected the sample")
        if not isinstance(out, dict):
            raise DatasetError(f"dataset index {idx}: a dataset inside MultiImageMixDataset must have a loading "
                               f"pipeline only (e.g. LoadImageFromFile, LoadAnnotations), got {type(out).__name__}; "
                               "move the other transforms to the wrapper's pipeline")
        return out

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


class AnnotationFileDataset(DetDataset):
    """What CocoDataset and VOCDataset share: images listed in annotation files, parsed once.

    Subclasses parse ``ann_file`` into per-image infos (``{filename, height, width, id}``) and
    annotation dicts (``bboxes``, ``labels``, ``bboxes_ignore``, ``masks``, ...) and hand them to
    :meth:`_store`, which drops, in training, images smaller than :data:`MIN_IMAGE_SIZE` and (with
    ``filter_empty_gt``) images without a box or ignore box. ``get_ann_info`` returns the stored
    dict itself: transforms and callers read it, never modify it.
    """

    ann_file: str
    seg_prefix: str | None = None
    data_infos: list[dict[str, Any]]
    _anns: list[dict[str, Any]]

    def _store(self, infos: list[dict[str, Any]], anns: list[dict[str, Any]]) -> None:
        keep = list(range(len(infos))) if self.test_mode else self._filter(infos, anns)
        self.data_infos = [infos[i] for i in keep]
        self._anns = [anns[i] for i in keep]

    def _filter(self, infos: list[dict[str, Any]], anns: list[dict[str, Any]]) -> list[int]:
        keep, small, empty = [], 0, 0
        for i, (info, ann) in enumerate(zip(infos, anns)):
            if min(info["height"], info["width"]) < MIN_IMAGE_SIZE:
                small += 1
            elif self.filter_empty_gt and len(ann["bboxes"]) + len(ann["bboxes_ignore"]) == 0:
                empty += 1
            else:
                keep.append(i)
        if small or empty:
            logger.info("%s: training skips %d images without ground truth of the selected classes and %d "
                        "images smaller than %d px", os.path.basename(self.ann_file), empty, small, MIN_IMAGE_SIZE)
        if not keep:
            reasons = []
            if empty:
                reasons.append(f"{empty} images have no ground truth of the selected classes "
                               "(filter_empty_gt=True; set it to false or check classes)")
            if small:
                reasons.append(f"{small} images are smaller than {MIN_IMAGE_SIZE} px")
            raise DatasetError(f"{self.ann_file}: no training image left after filtering: {'; '.join(reasons)}")
        return keep

    def __len__(self) -> int:
        return len(self.data_infos)

    def get_img_info(self, idx: int) -> dict[str, Any]:
        return self.data_infos[idx]

    def get_ann_info(self, idx: int) -> dict[str, Any]:
        return self._anns[idx]

    @property
    def image_ids(self) -> list[int]:
        return [int(info["id"]) for info in self.data_infos]

    def _prepare_results(self, idx: int, rng: np.random.Generator) -> dict[str, Any]:
        results = super()._prepare_results(idx, rng)
        results["seg_prefix"] = self.seg_prefix
        return results

    def check_images(self, decode: bool = False) -> None:
        """Raise :class:`DatasetError` if an image file is missing, empty or truncated (or, with ``decode``,
        does not decode).

        Only each file's first and last bytes are read (:func:`~detcli.data.transforms.loading.image_file_problem`,
        the rule ``LoadImageFromFile`` applies), so the engine can check a whole split before any work
        instead of failing at the iteration that reaches a bad file.
        """
        missing, broken = [], []
        for idx, info in enumerate(self.data_infos):
            path = os.path.join(self.img_prefix, info["filename"]) if self.img_prefix else info["filename"]
            if not os.path.isfile(path):
                missing.append((idx, path))
                continue
            try:
                problem = image_file_problem(path)
            except OSError as e:
                problem = f"cannot be read ({e.strerror or e})"
            if problem is not None:
                broken.append(f"{path} (index {idx}): {problem}")
            elif decode and _unreadable(path):
                raise DatasetError(f"cannot decode image {path} (dataset index {idx}): corrupted or not an image")
        if missing:
            shown = "; ".join(f"{p} (index {i})" for i, p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DatasetError(f"{len(missing)} image files of {self.ann_file} are missing: {shown}{more}; "
                               "check img_prefix/data_root")
        if broken:
            more = f"; and {len(broken) - 5} more" if len(broken) > 5 else ""
            raise DatasetError(f"{len(broken)} image files of {self.ann_file} are incomplete: {'; '.join(broken[:5])}{more}; "
                               f"{IMAGE_FIX}")


def _unreadable(path: str) -> bool:
    try:
        return read_image_file(path, cv2.IMREAD_UNCHANGED) is None
    except OSError:
        return True
