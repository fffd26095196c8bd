"""Distributed training and testing: launcher environments, collectives, and 2 gloo processes on CPU.

The end-to-end check trains a tiny FCOS (ResNet-18 with ``norm_eval: true``, GN head) for 4
iterations twice: once as 2 processes x ``samples_per_gpu 1`` (``det train --nproc 2``, gloo over
127.0.0.1), once as 1 process x ``samples_per_gpu 2``. The sampler gives rank ``r`` entries
``r, r + 2, ...`` of the epoch's permutation, so at every step the two ranks' images are exactly
the single process's batch; augmentation is a function of ``(seed, epoch, index)``. The FCOS
normalisers (``num_pos``, centerness sum) are means over ranks (mmdet's ``reduce_mean``), so
DDP's averaged gradient equals the big batch's. BatchNorm would break the equality (per-rank
batch statistics), hence ``norm_eval: true`` (frozen statistics) and GN in the head; SyncBN needs CUDA.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from detcli.engine import dist
from detcli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


# --------------------------------------------------------------------------- launcher environments


def test_read_dist_env_torchrun() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.2", "MASTER_PORT": "1234"}
    assert dist.detect_launcher(env) == "pytorch"
    info = dist.read_dist_env("auto", env)
    assert info == dist.DistEnv(3, 4, 1, "10.0.0.2", 1234, "pytorch")
    assert dist.read_dist_env("torchrun", env) == info
    assert dist.read_dist_env("auto", {}) is None
    assert dist.read_dist_env("none", env) is None


def test_read_dist_env_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist.shutil, "which", lambda name: None)  # parse SLURM_NODELIST ourselves
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[07-08,11]"}
    assert dist.read_dist_env("slurm", env) == dist.DistEnv(5, 8, 1, "gpu07", 29500, "slurm")
    env |= {"MASTER_PORT": "29611"}
    assert dist.read_dist_env("slurm", env).master_port == 29611


@pytest.mark.parametrize(("nodelist", "first"), [
    ("node1", "node1"), ("node1,node2", "node1"), ("node[3-5,7]", "node3"), ("gpu-[01-04]-a,cpu1", "gpu-01-a"),
])
def test_first_slurm_host(monkeypatch: pytest.MonkeyPatch, nodelist: str, first: str) -> None:
    monkeypatch.setattr(dist.shutil, "which", lambda name: None)
    assert dist.first_slurm_host(nodelist) == first


def test_bad_launcher_environment() -> None:
    with pytest.raises(ConfigError, match="SLURM_PROCID"):
        dist.read_dist_env("slurm", {})
    with pytest.raises(ConfigError, match="RANK"):
        dist.read_dist_env("pytorch", {"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="unknown launcher"):
        dist.read_dist_env("mpi", {})


def test_single_process_helpers_are_identities() -> None:
    assert dist.get_dist_info() == (0, 1)
    values = {"loss": torch.tensor(2.0)}
    assert dist.reduce_mean_dict(values) == values
    assert dist.run_on_main(lambda: 7) == 7
    assert dist.broadcast_object("x") == "x"
    assert dist.gather_results([1, 2, 3], 2) == [1, 2]
    with dist.distributed("none") as device:
        assert device == "cpu" and dist.get_dist_info() == (0, 1)


def test_strip_option() -> None:
    assert dist.strip_option(["test", "a.pth", "--nproc=2", "--json"], "--nproc") == ["test", "a.pth", "--json"]


# --------------------------------------------------------------------------- 2 processes with gloo


def tiny_cfg(samples_per_gpu: int) -> dict[str, Any]:
    train_pipeline = [
        {"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "img_scale": [64, 64], "keep_ratio": True}, {"type": "RandomFlip", "flip_ratio": 0.5},
        {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True}, {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
    ]
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": [64, 64], "flip": False, "transforms": [
            {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
            {"type": "Normalize", "mean": MEAN, "std": STD, "to_rgb": True}, {"type": "Pad", "size_divisor": 32},
            {"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": ["img"]}]},
    ]
    backbone = {"type": "ResNet", "depth": 18, "num_stages": 4, "out_indices": [0, 1, 2, 3], "frozen_stages": 1,
                "norm_cfg": {"type": "BN", "requires_grad": True}, "norm_eval": True, "style": "pytorch"}
    return {
        "model": {
            "type": "FCOS", "backbone": backbone,
            "neck": {"type": "FPN", "in_channels": [64, 128, 256, 512], "out_channels": 16, "start_level": 1,
                     "add_extra_convs": "on_output", "num_outs": 5, "relu_before_extra_convs": True},
            "bbox_head": {"type": "FCOSHead", "num_classes": 4, "in_channels": 16, "stacked_convs": 1,
                          "feat_channels": 16, "strides": [8, 16, 32, 64, 128],
                          "norm_cfg": {"type": "GN", "num_groups": 8, "requires_grad": True}},
            "test_cfg": {"nms_pre": 100, "min_bbox_size": 0, "score_thr": 0.05,
                         "nms": {"type": "nms", "iou_threshold": 0.5}, "max_per_img": 50},
        },
        "data": {"samples_per_gpu": samples_per_gpu, "workers_per_gpu": 0,
                 "train": {"type": "ShapesDataset", "num_images": 8, "img_size": 64, "split": "train",
                           "pipeline": train_pipeline},
                 "test": {"type": "ShapesDataset", "num_images": 5, "img_size": 64, "split": "val",
                          "pipeline": test_pipeline}},
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001},
        "optimizer_config": {"grad_clip": {"max_norm": 35, "norm_type": 2}},
        "lr_config": {"policy": "step", "warmup": "linear", "warmup_iters": 2, "warmup_ratio": 0.1, "step": [3],
                      "by_epoch": False},
        "runner": {"type": "IterBasedRunner", "max_iters": 4},
        "checkpoint_config": {"interval": 4, "by_epoch": False},
        "log_config": {"interval": 1},
    }


def run_det(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "detcli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"det {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny_fcos.yaml"
    cfg.write_text(yaml.safe_dump(tiny_cfg(samples_per_gpu=2)))
    single = tmp_path / "single"
    ddp = tmp_path / "ddp"
    run_det(["train", str(cfg), "--work-dir", str(single), "--no-validate", "--json"], tmp_path)
    out = run_det(["train", str(cfg), "--work-dir", str(ddp), "--no-validate", "--json", "--nproc", "2",
                   "--cfg-options", "data.samples_per_gpu=1"], tmp_path)
    summary = json.loads(out.stdout)  # rank 0 alone prints
    assert summary["last_checkpoint"].endswith("iter_4.pth")
    manifest = json.loads((ddp / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "finished"

    a = torch.load(single / "iter_4.pth", weights_only=True)
    b = torch.load(ddp / "iter_4.pth", weights_only=True)
    assert a["meta"]["iter"] == b["meta"]["iter"] == 4
    for key, value in a["state_dict"].items():
        assert key in b["state_dict"], key
        if value.is_floating_point():
            torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(b["state_dict"][key], value), key
    # logged losses are means over ranks: the same as the single process's batch loss
    logs = [json.loads(line) for line in next(ddp.glob("*.log.json")).read_text().splitlines()]
    logs_single = [json.loads(line) for line in next(single.glob("*.log.json")).read_text().splitlines()]
    first = next(r for r in logs if r.get("mode") == "train")
    first_single = next(r for r in logs_single if r.get("mode") == "train")
    assert first["loss_cls"] == pytest.approx(first_single["loss_cls"], rel=1e-4)

    # distributed det test (5 images: rank 1 gets a padded duplicate) gives the single-process metrics
    ckpt = str(single / "iter_4.pth")
    one = json.loads(run_det(["test", str(cfg), ckpt, "--json"], tmp_path).stdout)
    out_json = tmp_path / "results.json"
    two = json.loads(run_det(["test", str(cfg), ckpt, "--json", "--nproc", "2", "--out", str(out_json)],
                             tmp_path).stdout)
    assert set(one) >= {"bbox_mAP", "bbox_mAP_50"}
    assert two == pytest.approx(one, abs=1e-6)
    assert len({r["image_id"] for r in json.loads(out_json.read_text())}) <= 5


def _no_gt_worker(rank: int, world_size: int, port: int, queue: Any) -> None:
    """Rank 1 has no ground truth: both ranks must still finish a DDP step of FCOS."""
    import torch.distributed as torch_dist

    from detcli.registry import DETECTORS, build
    from detcli.structures import Boxes, GroundTruth, ImageBatch

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch_dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model_cfg = copy.deepcopy(tiny_cfg(1)["model"])
        import detcli.models  # noqa: F401

        model = build(model_cfg, DETECTORS, path="model")
        model.init_weights()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        images = ImageBatch.from_tensors([torch.randn(3, 64, 64)], size_divisor=32)
        if rank == 0:
            gt = GroundTruth((64, 64), Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])), torch.tensor([1]))
        else:
            gt = GroundTruth((64, 64), Boxes(torch.zeros((0, 4))), torch.zeros((0,), dtype=torch.long))
        for _ in range(2):
            losses = ddp(images, [gt])
            sum(v for k, v in losses.items() if "loss" in k).backward()
        queue.put((rank, "ok"))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.slow
def test_rank_without_ground_truth_does_not_hang() -> None:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = dist.free_port()
    mp.start_processes(_no_gt_worker, args=(2, port, queue), nprocs=2, join=True, start_method="spawn")
    assert sorted(queue.get() for _ in range(2)) == [(0, "ok"), (1, "ok")]
