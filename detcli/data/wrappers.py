"""Dataset wrappers (mmdet 2.x): RepeatDataset, ClassBalancedDataset, ConcatDataset, MultiImageMixDataset.

A wrapper maps its index to ``(inner dataset, inner index)`` and forwards ``dataset[...]`` as a
:class:`~detcli.data.base.SampleKey`, so augmentations stay a pure function of ``(seed, epoch,
index)`` through any nesting: the *k*-th copy of an image (Repeat, ClassBalanced) or the *k*-th
sub-dataset (Concat) draws from a seed derived from ``(seed, k)`` (the first one keeps ``seed``, so
``RepeatDataset(times=1)`` and a one-dataset Concat augment exactly like the dataset itself),
and two copies of one image in an epoch are augmented differently.

Wrappers expose what the engine uses: ``classes``, ``cat_ids``, ``image_ids``, ``test_mode``,
``get_img_info``, ``get_ann_info``, ``get_cat_ids``, ``load_image``, ``fingerprint()``,
``set_epoch``/``set_seed``. Evaluation (``det test``, training's validation) supports
ConcatDataset (``separate_eval``); Repeat/ClassBalanced are for training (mmdet evaluates neither).
"""

from __future__ import annotations

import bisect
import copy
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from detcli.data.base import SampleKey
from detcli.data.sample import Sample
from detcli.data.transforms.compose import RNG_KEY
from detcli.errors import ConfigError, DatasetError
from detcli.registry import DATASETS, TRANSFORMS, build

#: Stream tags of :func:`derive_seed` (one per wrapper kind, so nested wrappers do not collide).
_REPEAT, _CONCAT, _MIX = 1, 2, 3


def derive_seed(seed: int, tag: int, k: int) -> int:
    """The augmentation seed of copy/sub-dataset ``k``: ``seed`` itself for ``k == 0``, else a
    32-bit seed drawn from ``numpy.random.SeedSequence([seed, tag, k])``.

    Example:
        >>> derive_seed(7, 1, 0)
        7
        >>> derive_seed(7, 1, 1) == derive_seed(7, 1, 1) != derive_seed(7, 1, 2)
        True
    """
    if k == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, tag, int(k)]).generate_state(1)[0])


class DatasetWrapper(Dataset):
    """What the three wrappers share; subclasses implement ``__len__`` and :meth:`locate`."""

    datasets: list[Any]

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)
        self.seed = 0
        self.epoch = 0
        first = self.datasets[0]
        self.classes: tuple[str, ...] = tuple(first.classes)
        self.cat_ids: list[int] = list(first.cat_ids)
        self.test_mode = bool(getattr(first, "test_mode", False))

    def locate(self, idx: int) -> tuple[Any, int, int, int]:  # pragma: no cover - abstract
        """``(inner dataset, inner index, seed tag, stream k)`` of wrapper index ``idx``."""
        raise NotImplementedError

    def _checked(self, idx: int) -> int:
        idx = int(idx)
        if idx < 0:
            idx += len(self)  # type: ignore[arg-type]
        if not 0 <= idx < len(self):  # type: ignore[arg-type]
            raise IndexError(f"dataset index {idx} out of range for {len(self)} images")  # type: ignore[arg-type]
        return idx

    def __getitem__(self, key: int | SampleKey) -> Any:
        if isinstance(key, tuple):
            idx, epoch, seed = int(key[0]), int(key[1]), int(key[2])
        else:
            idx, epoch, seed = int(key), self.epoch, self.seed
        inner, inner_idx, tag, k = self.locate(self._checked(idx))
        return inner[SampleKey(inner_idx, epoch, derive_seed(seed, tag, k))]

    def load_results(self, key: SampleKey) -> dict[str, Any]:
        """The inner dataset's results dict of ``key`` (see :meth:`DetDataset.load_results`)."""
        idx, epoch, seed = int(key[0]), int(key[1]), int(key[2])
        inner, inner_idx, tag, k = self.locate(self._checked(idx))
        if not hasattr(inner, "load_results"):
            raise DatasetError(f"{type(inner).__name__} cannot feed a MultiImageMixDataset (no load_results)")
        return inner.load_results(SampleKey(inner_idx, epoch, derive_seed(seed, tag, k)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)

    def get_img_info(self, idx: int) -> dict[str, Any]:
        inner, i, _, _ = self.locate(self._checked(idx))
        return inner.get_img_info(i)

    def get_ann_info(self, idx: int) -> dict[str, Any]:
        inner, i, _, _ = self.locate(self._checked(idx))
        return inner.get_ann_info(i)

    def get_cat_ids(self, idx: int) -> list[int]:
        inner, i, _, _ = self.locate(self._checked(idx))
        return list(inner.get_cat_ids(i))

    def load_image(self, idx: int) -> np.ndarray:
        inner, i, _, _ = self.locate(self._checked(idx))
        return inner.load_image(i)

    @property
    def image_ids(self) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def coco(self) -> Any:
        """The ground truth of the (one) wrapped dataset."""
        if len(self.datasets) != 1:
            raise ConfigError(f"{type(self).__name__} of {len(self.datasets)} datasets has no single COCO ground truth; "
                              "evaluate it with separate_eval: true")
        return self.datasets[0].coco

    def check_images(self, decode: bool = False) -> None:
        for d in self.datasets:
            if hasattr(d, "check_images"):
                d.check_images(decode)

    def _inner_fingerprints(self) -> list[dict[str, Any]]:
        return [d.fingerprint() if hasattr(d, "fingerprint") else {"num_images": len(d)} for d in self.datasets]


@DATASETS.register()
class RepeatDataset(DatasetWrapper):
    """``dataset`` repeated ``times`` times: index ``i`` is ``dataset[i % len(dataset)]``.

    Makes short epochs longer (fewer evaluations, checkpoints and loader restarts).

    Args:
        dataset: the dataset (a built dataset or a ``{type: ...}`` node).
        times: how many copies (>= 1).
    """

    def __init__(self, dataset: Any, times: int) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ConfigError(f"RepeatDataset.times must be a positive integer, got {times!r}")
        super().__init__([dataset])
        self.dataset = dataset
        self.times = int(times)
        self._len = len(dataset)

    def __len__(self) -> int:
        return self.times * self._len

    def locate(self, idx: int) -> tuple[Any, int, int, int]:
        return self.dataset, idx % self._len, _REPEAT, idx // self._len

    @property
    def image_ids(self) -> list[int]:
        return list(self.dataset.image_ids) * self.times

    def fingerprint(self) -> dict[str, Any]:
        return {"type": "RepeatDataset", "times": self.times, "num_images": len(self),
                "dataset": self._inner_fingerprints()[0]}

    def __repr__(self) -> str:
        return f"RepeatDataset(times={self.times}, dataset={self.dataset!r})"


def repeat_factors(cat_ids_per_image: Sequence[Sequence[int]], oversample_thr: float, filter_empty_gt: bool,
                   background: int) -> list[float]:
    """LVIS repeat factors: ``r(I) = max over c in I of max(1, sqrt(t / f(c)))``.

    ``f(c)`` is the fraction of images containing ``c``. With ``filter_empty_gt=False`` an image
    without objects counts as containing the pseudo class ``background``; with True it keeps factor 1.

    Example:
        >>> [round(r, 4) for r in repeat_factors([[0], [0], [0], [1]], 0.5, True, 2)]
        [1.0, 1.0, 1.0, 1.4142]
    """
    sets = []
    for cats in cat_ids_per_image:
        s = set(int(c) for c in cats)
        if not s and not filter_empty_gt:
            s = {background}
        sets.append(s)
    num_images = len(sets)
    freq: dict[int, int] = defaultdict(int)
    for s in sets:
        for c in s:
            freq[c] += 1
    cat_repeat = {c: max(1.0, math.sqrt(oversample_thr / (n / num_images))) for c, n in freq.items()}
    return [max(cat_repeat[c] for c in s) if s else 1.0 for s in sets]


@DATASETS.register()
class ClassBalancedDataset(DatasetWrapper):
    """``dataset`` with image ``I`` repeated ``ceil(r(I))`` times (mmdet/LVIS repeat-factor sampling).

    Args:
        dataset: the dataset; it must implement ``get_cat_ids(idx)``.
        oversample_thr: frequency ``t`` below which a class is oversampled (``r(c) = max(1, sqrt(t / f(c)))``).
        filter_empty_gt: images without objects keep factor 1 (True) or count as a background class (False).

    Attributes:
        repeat_factors: ``r(I)`` of every image of ``dataset``.
        repeat_indices: the inner index of every wrapper index.
    """

    def __init__(self, dataset: Any, oversample_thr: float, filter_empty_gt: bool = True) -> None:
        if not hasattr(dataset, "get_cat_ids"):
            raise ConfigError(f"ClassBalancedDataset needs a dataset with get_cat_ids(idx); {type(dataset).__name__} has none")
        if isinstance(oversample_thr, bool) or not isinstance(oversample_thr, (int, float)) or oversample_thr < 0:
            raise ConfigError(f"ClassBalancedDataset.oversample_thr must be a number >= 0, got {oversample_thr!r}")
        super().__init__([dataset])
        self.dataset = dataset
        self.oversample_thr = float(oversample_thr)
        self.filter_empty_gt = bool(filter_empty_gt)
        cats = [dataset.get_cat_ids(i) for i in range(len(dataset))]
        self.repeat_factors = repeat_factors(cats, self.oversample_thr, self.filter_empty_gt, len(self.classes))
        self.repeat_indices: list[int] = []
        self._copy: list[int] = []
        for i, factor in enumerate(self.repeat_factors):
            n = math.ceil(factor)
            self.repeat_indices.extend([i] * n)
            self._copy.extend(range(n))

    def __len__(self) -> int:
        return len(self.repeat_indices)

    def locate(self, idx: int) -> tuple[Any, int, int, int]:
        return self.dataset, self.repeat_indices[idx], _REPEAT, self._copy[idx]

    @property
    def image_ids(self) -> list[int]:
        ids = self.dataset.image_ids
        return [ids[i] for i in self.repeat_indices]

    def fingerprint(self) -> dict[str, Any]:
        return {"type": "ClassBalancedDataset", "oversample_thr": self.oversample_thr,
                "filter_empty_gt": self.filter_empty_gt, "num_images": len(self),
                "dataset": self._inner_fingerprints()[0]}

    def __repr__(self) -> str:
        return f"ClassBalancedDataset(oversample_thr={self.oversample_thr}, num_images={len(self)}, dataset={self.dataset!r})"


@DATASETS.register()
class ConcatDataset(DatasetWrapper):
    """Several datasets one after the other (mmdet ``ConcatDataset``).

    Args:
        datasets: the datasets (built or ``{type: ...}`` nodes); they must share ``classes``.
        separate_eval: evaluate each sub-dataset on its own, metric names prefixed with its
            position (``0_mAP``, ``1_bbox_mAP``, ...); False evaluates them as one, which needs
            datasets of one type and per-image metrics (``mAP``, ``recall``).

    Raises:
        DatasetError: empty list, or sub-datasets with different classes.
        ConfigError: ``separate_eval=False`` with datasets of different types.
    """

    def __init__(self, datasets: Sequence[Any], separate_eval: bool = True) -> None:
        if not datasets:
            raise DatasetError("ConcatDataset: datasets must not be empty")
        super().__init__(datasets)
        for k, d in enumerate(self.datasets[1:], start=1):
            if tuple(d.classes) != self.classes:
                raise DatasetError(f"ConcatDataset: datasets.{k} has classes {list(d.classes)} but datasets.0 has "
                                   f"{list(self.classes)}; set the same classes on every sub-dataset")
        self.separate_eval = bool(separate_eval)
        kinds = sorted({type(d).__name__ for d in self.datasets})
        if not self.separate_eval and len(kinds) > 1:
            raise ConfigError(f"ConcatDataset with separate_eval: false needs datasets of one type, got {', '.join(kinds)}; "
                              "set separate_eval: true")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]).tolist())

    def __len__(self) -> int:
        return int(self.cumulative_sizes[-1])

    def locate(self, idx: int) -> tuple[Any, int, int, int]:
        k = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[k - 1] if k else 0
        return self.datasets[k], idx - start, _CONCAT, k

    def ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` of every sub-dataset."""
        starts = [0] + self.cumulative_sizes[:-1]
        return list(zip(starts, self.cumulative_sizes))

    @property
    def image_ids(self) -> list[int]:
        return [i for d in self.datasets for i in d.image_ids]

    def fingerprint(self) -> dict[str, Any]:
        return {"type": "ConcatDataset", "separate_eval": self.separate_eval, "num_images": len(self),
                "datasets": self._inner_fingerprints()}

    def __repr__(self) -> str:
        return f"ConcatDataset({', '.join(repr(d) for d in self.datasets)})"


def copy_results(results: dict[str, Any]) -> dict[str, Any]:
    """A copy of a results dict a transform may modify: arrays, lists and nested results are
    copied, the annotation dicts (``ann_info``, ``img_info``: read-only by contract) and other
    objects are shared."""
    out: dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif k == "mix_results":
            out[k] = [copy_results(r) for r in v]
        elif isinstance(v, list):
            out[k] = list(v)
        elif k in ("ann_info", "img_info", RNG_KEY):
            out[k] = v
        else:
            out[k] = copy.deepcopy(v)
    return out


@DATASETS.register()
class MultiImageMixDataset(DatasetWrapper):
    """Runs a pipeline of multi-image transforms over a dataset (mmdet 2.x ``MultiImageMixDataset``).

    The inner dataset's pipeline only loads (``LoadImageFromFile``, ``LoadAnnotations``); this
    wrapper's ``pipeline`` does the rest and ends with ``Collect``. Before a transform that has
    ``get_indexes(dataset, rng)`` (``Mosaic``, ``MixUp``), the images it asks for are loaded and
    handed over as ``results['mix_results']``. A transform returning None is retried (with new
    random draws) up to ``max_refetch`` times.

    Randomness: wrapper index ``i`` of epoch ``e`` draws every augmentation, and the choice of its
    extra images, from ``numpy.random.default_rng([seed, e, i, 3])``; images are loaded with the
    inner dataset's own ``(seed, e, index)`` stream. A mixed sample is thus a pure function of
    ``(seed, epoch, index)``, whatever the number of workers.

    Args:
        dataset: the dataset (built or a ``{type: ...}`` node) with a loading-only pipeline.
        pipeline: the transforms (``{type: ...}`` nodes), ending with ``Collect``.
        dynamic_scale: ``(h, w)`` put in ``results['scale']`` before the pipeline (``Resize`` and
            ``MixUp`` use it); changed in training by :meth:`update_dynamic_scale`.
        skip_type_keys: transform types to skip (e.g. ``[Mosaic, MixUp]``); changed in training by
            :meth:`update_skip_type_keys` (``YOLOXModeSwitchHook``).
        max_refetch: tries per transform (and per draw of extra images).

    Raises:
        ConfigError: a pipeline entry that is not a ``{type: ...}`` node, bad ``skip_type_keys``.
    """

    def __init__(self, dataset: Any, pipeline: Sequence[Any], dynamic_scale: Sequence[int] | None = None,
                 skip_type_keys: Sequence[str] | None = None, max_refetch: int = 15) -> None:
        super().__init__([dataset])
        self.dataset = dataset
        self.pipeline: list[Any] = []
        self.pipeline_types: list[str] = []
        for i, node in enumerate(pipeline):
            if isinstance(node, dict) and "type" in node:
                self.pipeline_types.append(str(node["type"]))
                self.pipeline.append(build(node, TRANSFORMS, path=f"pipeline.{i}"))
            elif callable(node):
                self.pipeline_types.append(type(node).__name__)
                self.pipeline.append(node)
            else:
                raise ConfigError(f"MultiImageMixDataset.pipeline.{i}: expected a {{type: ...}} node, got {node!r}")
        self.skip_type_keys: tuple[str, ...] | None = None
        self.update_skip_type_keys(skip_type_keys)
        self.dynamic_scale: tuple[int, int] | None = None
        if dynamic_scale is not None:
            self.update_dynamic_scale(dynamic_scale)
        if isinstance(max_refetch, bool) or int(max_refetch) < 1:
            raise ConfigError(f"MultiImageMixDataset.max_refetch must be >= 1, got {max_refetch!r}")
        self.max_refetch = int(max_refetch)
        self._len = len(dataset)

    def update_skip_type_keys(self, skip_type_keys: Sequence[str] | None) -> None:
        """Skip the transforms of these types from now on (None: skip none)."""
        if skip_type_keys is None:
            self.skip_type_keys = None
            return
        if isinstance(skip_type_keys, str) or not all(isinstance(k, str) for k in skip_type_keys):
            raise ConfigError(f"skip_type_keys must be a list of transform type names, got {skip_type_keys!r}")
        self.skip_type_keys = tuple(skip_type_keys)

    def update_dynamic_scale(self, dynamic_scale: Sequence[int]) -> None:
        """Set ``results['scale']`` of every later sample to ``dynamic_scale``."""
        if not (isinstance(dynamic_scale, (list, tuple)) and len(dynamic_scale) == 2):
            raise ConfigError(f"dynamic_scale must be a pair, got {dynamic_scale!r}")
        self.dynamic_scale = (int(dynamic_scale[0]), int(dynamic_scale[1]))

    def __len__(self) -> int:
        return self._len

    def locate(self, idx: int) -> tuple[Any, int, int, int]:
        return self.dataset, idx, _MIX, 0

    @property
    def image_ids(self) -> list[int]:
        return list(self.dataset.image_ids)

    def _load(self, idx: int, epoch: int, seed: int) -> dict[str, Any]:
        return self.dataset.load_results(SampleKey(idx, epoch, seed))

    def __getitem__(self, key: int | SampleKey) -> Any:
        if isinstance(key, tuple):
            idx, epoch, seed = int(key[0]), int(key[1]), int(key[2])
        else:
            idx, epoch, seed = int(key), self.epoch, self.seed
        idx = self._checked(idx)
        results = self._load(idx, epoch, seed)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, idx, _MIX])
        results.pop(RNG_KEY, None)
        if self.dynamic_scale is not None:
            results["scale"] = self.dynamic_scale
        for transform, kind in zip(self.pipeline, self.pipeline_types):
            if self.skip_type_keys is not None and kind in self.skip_type_keys:
                continue
            if hasattr(transform, "get_indexes"):
                indexes = transform.get_indexes(self.dataset, rng)
                if isinstance(indexes, (int, np.integer)):
                    indexes = [indexes]
                mix = [self._load(int(j), epoch, seed) for j in indexes]
                for m in mix:
                    m.pop(RNG_KEY, None)
                results["mix_results"] = mix
            for _ in range(self.max_refetch):
                trial = copy_results(results)
                trial[RNG_KEY] = rng
                out = transform(trial)
                if out is not None:
                    results = out
                    if isinstance(results, dict):
                        results.pop(RNG_KEY, None)
                    break
            else:
                raise DatasetError(f"MultiImageMixDataset index {idx}: {kind} rejected the sample "
                                   f"{self.max_refetch} times in a row")
            if isinstance(results, dict):
                results.pop("mix_results", None)
        if not isinstance(results, Sample):
            raise DatasetError(f"MultiImageMixDataset index {idx}: the pipeline must end with Collect "
                               f"(got {type(results).__name__})")
        return results

    def fingerprint(self) -> dict[str, Any]:
        return {"type": "MultiImageMixDataset", "pipeline": self.pipeline_types, "num_images": len(self),
                "dataset": self._inner_fingerprints()[0]}

    def __repr__(self) -> str:
        return (f"MultiImageMixDataset(pipeline={self.pipeline_types}, skip_type_keys={self.skip_type_keys}, "
                f"dynamic_scale={self.dynamic_scale}, dataset={self.dataset!r})")
