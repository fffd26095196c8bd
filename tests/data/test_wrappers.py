"""RepeatDataset, ClassBalancedDataset, ConcatDataset: lengths, index mapping, repeat factors, seeding, building."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detcli.data import (
    ClassBalancedDataset,
    ConcatDataset,
    RepeatDataset,
    SampleKey,
    ShapesDataset,
    VOCDataset,
    aspect_ratio_flags,
    build_dataloader,
    build_dataset,
    dry_run_dataset,
)
from detcli.data.wrappers import derive_seed, repeat_factors
from detcli.errors import ConfigError, DatasetError

from tests.data.helpers import train_pipeline, tta_pipeline
from tests.data.voc_helpers import shapes_voc_images, write_voc


def shapes(n: int = 3, split: str = "train", test_mode: bool = False, flip: float = 0.5, size: int = 64) -> ShapesDataset:
    pipeline = tta_pipeline((size, size)) if test_mode else train_pipeline((size, size), flip_ratio=flip)
    return ShapesDataset(pipeline=pipeline, num_images=n, split=split, img_size=size, test_mode=test_mode)


class Labelled:
    """A stand-in dataset whose images hold the given label sets."""

    classes = ("a", "b")
    cat_ids = [1, 2]

    def __init__(self, label_sets: list[list[int]]) -> None:
        self.label_sets = label_sets

    def __len__(self) -> int:
        return len(self.label_sets)

    def get_cat_ids(self, idx: int) -> list[int]:
        return self.label_sets[idx]

    def __getitem__(self, key: Any) -> Any:
        return tuple(key)

    @property
    def image_ids(self) -> list[int]:
        return [10 + i for i in range(len(self))]


# --------------------------------------------------------------------------- RepeatDataset


def test_repeat_length_mapping_and_metadata() -> None:
    inner = shapes(3)
    ds = RepeatDataset(inner, times=4)
    assert len(ds) == 12
    assert ds.classes == inner.classes and ds.cat_ids == inner.cat_ids
    assert ds.image_ids == [1, 2, 3] * 4
    assert ds.get_img_info(7) == inner.get_img_info(1)
    np.testing.assert_array_equal(ds.get_ann_info(-1)["bboxes"], inner.get_ann_info(2)["bboxes"])
    assert ds.fingerprint() == {"type": "RepeatDataset", "times": 4, "num_images": 12, "dataset": inner.fingerprint()}
    with pytest.raises(IndexError):
        ds.get_img_info(12)
    with pytest.raises(ConfigError, match="positive integer"):
        RepeatDataset(inner, times=0)


def test_repeat_first_copy_augments_like_the_dataset_and_other_copies_differ() -> None:
    inner = Labelled([[0], [1]])
    ds = RepeatDataset(inner, times=3)
    assert ds[SampleKey(1, 5, 9)] == (1, 5, 9)  # copy 0 keeps the seed
    assert ds[SampleKey(3, 5, 9)] == (1, 5, derive_seed(9, 1, 1))
    assert ds[SampleKey(5, 5, 9)] == (1, 5, derive_seed(9, 1, 2))
    assert len({ds[SampleKey(i, 0, 0)][2] for i in (1, 3, 5)}) == 3
    ds.set_epoch(2)
    ds.set_seed(4)
    assert ds[3] == (1, 2, derive_seed(4, 1, 1))  # plain int: the wrapper's epoch and seed


def test_repeat_samples_are_pure_functions_of_the_key() -> None:
    ds = RepeatDataset(shapes(2, flip=0.5), times=2)
    a, b = ds[SampleKey(3, 1, 7)], ds[SampleKey(3, 1, 7)]
    assert torch.equal(a.image, b.image) and torch.equal(a.gt.boxes.tensor, b.gt.boxes.tensor)
    plain = shapes(2, flip=0.5)[SampleKey(1, 1, 7)]
    first = ds[SampleKey(1, 1, 7)]
    assert torch.equal(plain.image, first.image)


# --------------------------------------------------------------------------- ClassBalancedDataset


def test_class_balanced_spec_case() -> None:
    ds = ClassBalancedDataset(Labelled([[0], [0], [0], [1]]), oversample_thr=0.5)
    assert ds.repeat_factors == pytest.approx([1, 1, 1, math.sqrt(2)])
    assert ds.repeat_indices == [0, 1, 2, 3, 3]
    assert len(ds) == 5
    assert ds.image_ids == [10, 11, 12, 13, 13]
    assert ds[SampleKey(4, 0, 3)] == (3, 0, derive_seed(3, 1, 1))  # the second copy of image 3
    assert ds[SampleKey(3, 0, 3)] == (3, 0, 3)


def test_class_balanced_empty_images_and_filter_empty_gt() -> None:
    sets = [[0], [0], [], [1]]
    # f: a = 0.5, b = 0.25; empty image factor 1
    assert repeat_factors(sets, 0.5, True, 2) == pytest.approx([1, 1, 1, math.sqrt(2)])
    # empty image counts as background (f = 0.25)
    assert repeat_factors(sets, 0.5, False, 2) == pytest.approx([1, 1, math.sqrt(2), math.sqrt(2)])
    ds = ClassBalancedDataset(Labelled(sets), oversample_thr=0.5, filter_empty_gt=False)
    assert ds.repeat_indices == [0, 1, 2, 2, 3, 3]
    # max over the classes of an image; thresholds at or below every frequency change nothing
    assert repeat_factors([[0, 1], [0], [0], [0]], 1.0, True, 2) == pytest.approx([2, 1, 1, 1])
    assert ClassBalancedDataset(Labelled(sets), oversample_thr=0.1).repeat_indices == [0, 1, 2, 3]


def test_class_balanced_on_a_real_dataset_and_bad_args() -> None:
    inner = shapes(4)
    ds = ClassBalancedDataset(inner, oversample_thr=1.0)
    assert len(ds) == sum(math.ceil(f) for f in ds.repeat_factors) >= 4
    assert ds.fingerprint()["dataset"] == inner.fingerprint()
    with pytest.raises(ConfigError, match="oversample_thr"):
        ClassBalancedDataset(inner, oversample_thr=-1)


# --------------------------------------------------------------------------- ConcatDataset


def test_concat_lengths_mapping_ids_and_flags() -> None:
    a, b = shapes(2, "train"), shapes(3, "val")
    ds = ConcatDataset([a, b])
    assert len(ds) == 5 and ds.cumulative_sizes == [2, 5] and ds.ranges() == [(0, 2), (2, 5)]
    assert ds.image_ids == [1, 2, 1, 2, 3]
    assert ds.get_img_info(2) == b.get_img_info(0)
    np.testing.assert_array_equal(ds.get_ann_info(4)["bboxes"], b.get_ann_info(2)["bboxes"])
    assert aspect_ratio_flags(ds) == [0] * 5
    assert ds.fingerprint()["datasets"] == [a.fingerprint(), b.fingerprint()]
    assert ds.locate(1)[1:] == (1, 2, 0) and ds.locate(2)[1:] == (0, 2, 1)


def test_concat_checks_classes_and_types() -> None:
    a = shapes(2)
    b = ShapesDataset(pipeline=[], num_images=2, classes=["star"], filter_empty_gt=False)
    with pytest.raises(DatasetError, match="datasets.1 has classes"):
        ConcatDataset([a, b])
    with pytest.raises(DatasetError, match="must not be empty"):
        ConcatDataset([])
    ConcatDataset([a, shapes(1, "val")], separate_eval=False)  # one type: fine
    with pytest.raises(ConfigError, match="separate_eval"):
        ConcatDataset([a, RepeatDataset(a, 1)], separate_eval=False)


def test_concat_in_a_loader_covers_every_index_once_per_epoch() -> None:
    ds = ConcatDataset([RepeatDataset(shapes(2), times=2), shapes(3, "val")])
    loader = build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=0, shuffle=True, seed=3)
    assert len(loader) == 4
    assert sorted(loader.sampler.indices()) == list(range(7))
    batch = next(iter(loader))
    assert batch.images.tensor.shape[0] == 2 and batch.targets is not None


# --------------------------------------------------------------------------- building


def _shapes_node(n: int, split: str = "train") -> dict[str, Any]:
    return {"type": "ShapesDataset", "num_images": n, "split": split, "img_size": 64, "pipeline": tta_pipeline((64, 64))}


def test_build_wrappers_pass_test_mode_to_inner_datasets() -> None:
    node = {"type": "ConcatDataset",
            "datasets": [{"type": "RepeatDataset", "times": 2, "dataset": _shapes_node(2)}, _shapes_node(1, "val")]}
    ds = build_dataset(node, test_mode=True)
    assert isinstance(ds, ConcatDataset) and ds.test_mode and ds.separate_eval and len(ds) == 5
    assert ds.datasets[0].dataset.test_mode
    assert isinstance(ds[4], list)
    listed = build_dataset([_shapes_node(2), _shapes_node(1, "val")], test_mode=True)
    assert isinstance(listed, ConcatDataset) and len(listed) == 3 and listed.separate_eval
    whole = build_dataset({"type": "ConcatDataset", "separate_eval": False, "datasets": [_shapes_node(1)] * 2}, test_mode=True)
    assert not whole.separate_eval and len(whole) == 2
    cb = build_dataset({"type": "ClassBalancedDataset", "oversample_thr": 0.0, "dataset": _shapes_node(2)}, test_mode=True)
    assert len(cb) == 2


def test_build_errors_name_the_path() -> None:
    with pytest.raises(ConfigError, match=r"data.train.dataset.type"):
        build_dataset({"type": "RepeatDataset", "times": 2, "dataset": {"type": "ShapesDatset", "pipeline": []}},
                      test_mode=False, path="data.train")
    with pytest.raises(ConfigError, match="needs the key 'dataset'"):
        build_dataset({"type": "RepeatDataset", "times": 2}, test_mode=False)
    with pytest.raises(ConfigError, match="unknown key 'time'"):
        build_dataset({"type": "RepeatDataset", "time": 2, "dataset": _shapes_node(1)}, test_mode=False)
    with pytest.raises(ConfigError, match=r"data.train.dataset.*unknown key 'num_imgs'"):
        dry_run_dataset({"type": "RepeatDataset", "times": 2, "dataset": {**_shapes_node(1), "num_imgs": 3}},
                        test_mode=False, path="data.train")
    dry_run_dataset({"type": "ConcatDataset", "datasets": [_shapes_node(1)]}, test_mode=True, path="data.test")


def test_ann_file_list_concatenates_two_voc_years(tmp_path: Path) -> None:
    devkit = tmp_path / "VOCdevkit"
    write_voc(devkit, 2007, {"trainval": shapes_voc_images(2, split="a")})
    write_voc(devkit, 2012, {"trainval": shapes_voc_images(3, split="b")})
    node = {"type": "VOCDataset", "data_root": str(devkit), "classes": ["rectangle", "ellipse", "triangle", "star"],
            "ann_file": ["VOC2007/ImageSets/Main/trainval.txt", "VOC2012/ImageSets/Main/trainval.txt"],
            "img_prefix": ["VOC2007/", "VOC2012/"], "pipeline": train_pipeline((64, 64))}
    ds = build_dataset(node, test_mode=False)
    assert isinstance(ds, ConcatDataset) and len(ds) == 5
    assert [d.year for d in ds.datasets] == [2007, 2012]
    assert all(isinstance(d, VOCDataset) for d in ds.datasets)
    dry_run_dataset(node, test_mode=False, path="data.train")
    with pytest.raises(ConfigError, match="2 prefixes for 3 ann_file"):
        build_dataset({**node, "ann_file": node["ann_file"] + ["x.txt"]}, test_mode=False)
