from __future__ import annotations

import pytest
import torch

from detcli.data import Batch, DetSampler, SampleKey, ShapesDataset, build_dataloader, collate
from detcli.data.sample import Sample
from detcli.structures import GroundTruth, ImageMeta

from tests.data.helpers import tta_pipeline

AUG_PIPELINE = [
    {"type": "LoadImageFromFile"},
    {"type": "LoadAnnotations"},
    {"type": "Resize", "img_scale": [(200, 160), (256, 256)], "multiscale_mode": "range"},
    {"type": "RandomFlip", "flip_ratio": 0.5},
    {"type": "PhotoMetricDistortion"},
    {"type": "Normalize", "mean": [0, 0, 0], "std": [255, 255, 255]},
    {"type": "DefaultFormatBundle"},
    {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
]


def sample(h: int, w: int, with_gt: bool = True) -> Sample:
    meta = ImageMeta(1, "x", (h, w), (h, w), (h, w))
    gt = GroundTruth((h, w), torch.tensor([[0., 0., 1., 1.]]), torch.tensor([0])) if with_gt else None
    return Sample(torch.ones(3, h, w), meta, gt)


def test_collate_pads_to_multiple_of_32() -> None:
    b = collate([sample(50, 70), sample(64, 33)])
    assert isinstance(b, Batch)
    assert tuple(b.images.tensor.shape) == (2, 3, 64, 96)
    assert b.images.image_sizes == [(50, 70), (64, 33)]
    assert b.images.tensor[0, :, 50:].abs().sum() == 0 and b.images.tensor[0, :, :50, :70].min() == 1
    assert len(b.targets) == 2 and b.num_augs == [1, 1]


def test_collate_test_mode_lists_are_flattened_in_groups() -> None:
    b = collate([[sample(32, 32, False), sample(32, 32, False)], [sample(40, 40, False)]])
    assert len(b) == 3 and b.targets is None
    assert b.num_augs == [2, 1] and b.groups() == [slice(0, 2), slice(2, 3)]
    with pytest.raises(ValueError):
        collate([])


def test_sampler_order_is_function_of_seed_and_epoch() -> None:
    a = DetSampler(10, seed=1, epoch=0).indices()
    assert sorted(a) == list(range(10))
    assert a == DetSampler(10, seed=1, epoch=0).indices()
    assert a != DetSampler(10, seed=1, epoch=1).indices()
    assert a != DetSampler(10, seed=2, epoch=0).indices()
    s = DetSampler(10, seed=1, epoch=0)
    s.set_epoch(1)
    assert s.indices() == DetSampler(10, seed=1, epoch=1).indices()
    assert list(s)[0] == SampleKey(s.indices()[0], 1, 1)
    assert DetSampler(5, shuffle=False).indices() == [0, 1, 2, 3, 4]
    # mid-epoch resume: skip what was already seen, same order for the rest
    s.set_epoch(1, start=4)
    assert [k.index for k in s] == DetSampler(10, seed=1, epoch=1).indices()[4:] and len(s) == 6
    s.set_epoch(2)
    assert len(s) == 10
    with pytest.raises(ValueError, match="start"):
        s.set_epoch(2, start=11)


def test_sampler_shards_and_pads_like_distributed_sampler() -> None:
    shards = [DetSampler(10, seed=0, num_replicas=3, rank=r).indices() for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    flat = sorted(i for s in shards for i in s)
    assert set(flat) == set(range(10)) and len(flat) == 12  # two repeated to pad
    full = DetSampler(10, seed=0).indices()
    assert shards[1] == (full + full[:2])[1::3]
    assert len(DetSampler(10, num_replicas=3, rank=0, drop_last=True)) == 3
    with pytest.raises(ValueError):
        DetSampler(10, num_replicas=2, rank=2)


def test_samples_and_augmentations_independent_of_worker_count() -> None:
    ds = ShapesDataset(pipeline=AUG_PIPELINE, num_images=6, seed=4)

    def run(workers: int, epoch: int) -> list[Batch]:
        loader = build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=workers, seed=7, epoch=epoch)
        return list(loader)

    b0 = run(0, 0)
    b2 = run(2, 0)
    assert len(b0) == 3
    for x, y in zip(b0, b2):
        assert torch.equal(x.images.tensor, y.images.tensor)
        assert [m.image_id for m in x.metas] == [m.image_id for m in y.metas]
        assert all(torch.equal(a.boxes.tensor, b.boxes.tensor) for a, b in zip(x.targets, y.targets))
    # another epoch: another order and other augmentations of the same image
    e1 = run(0, 1)
    first = {m.image_id: (m.img_shape, m.flip) for b in b0 for m in b.metas}
    second = {m.image_id: (m.img_shape, m.flip) for b in e1 for m in b.metas}
    assert first != second
    # dataset[int] uses the dataset's seed/epoch and equals the sampler key path
    ds.set_seed(7)
    key = SampleKey(3, 0, 7)
    assert torch.equal(ds[3].image, ds[key].image)


def test_test_mode_loader_groups_augmentations() -> None:
    ds = ShapesDataset(pipeline=tta_pipeline((256, 256), flip=True), num_images=3, split="val", test_mode=True)
    batches = list(build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=0, shuffle=False))
    assert [b.num_augs for b in batches] == [[2, 2], [2]]
    assert [m.image_id for m in batches[0].metas] == [1, 1, 2, 2]
    assert batches[0].targets is None


def test_batch_to_device() -> None:
    b = collate([sample(32, 32)]).to("cpu")
    assert b.images.tensor.device.type == "cpu" and b.targets[0].labels.tolist() == [0]


def test_group_sampler_batches_hold_one_aspect_group_across_ranks() -> None:
    flags = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]  # 5 portrait, 6 landscape
    batch, world = 2, 2
    ranks = [DetSampler(len(flags), seed=3, epoch=1, num_replicas=world, rank=r, group_flags=flags, batch_size=batch)
             for r in range(world)]
    per_rank = [s.indices() for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == 8  # groups padded to multiples of 4: (8 + 8) / 2
    single = DetSampler(len(flags), seed=3, epoch=1, group_flags=flags, batch_size=batch * world).indices()
    for k in range(0, len(per_rank[0]), batch):
        union = per_rank[0][k: k + batch] + per_rank[1][k: k + batch]
        assert len({flags[i] for i in union}) == 1  # one group per global batch
        j = k * world
        assert sorted(union) == sorted(single[j: j + batch * world])  # same as one process with the global batch
    assert set(per_rank[0] + per_rank[1]) == set(range(len(flags)))
    assert per_rank[0] != DetSampler(len(flags), seed=3, epoch=2, num_replicas=world, rank=0, group_flags=flags,
                                     batch_size=batch).indices()


def test_aspect_ratio_flags() -> None:
    from detcli.data import aspect_ratio_flags

    class Infos:
        sizes = [(100, 200), (200, 100), (50, 50)]

        def __len__(self) -> int:
            return len(self.sizes)

        def get_img_info(self, i: int) -> dict[str, int]:
            h, w = self.sizes[i]
            return {"height": h, "width": w}

    assert aspect_ratio_flags(Infos()) == [1, 0, 0]
