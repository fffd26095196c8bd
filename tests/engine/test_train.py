"""train(): run directory contents, logs, manifest, resume equality, load_from and failures."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import detcli.engine as engine
from detcli.engine.hooks import Hook
from detcli.engine.progress import ProgressEvent
from detcli.errors import CheckpointError, ConfigError, DetError, TrainingError
from detcli.registry import HOOKS

from engine_helpers import tiny_cfg


class Interrupted(Exception):
    pass


@HOOKS.register()
class InterruptHook(Hook):
    """Raises after a given epoch or iteration, as a killed run would stop."""

    def __init__(self, epoch: int = -1, iter: int = -1) -> None:
        self.epoch = epoch
        self.iter = iter

    def after_epoch(self, runner: Any) -> None:
        if runner.epoch == self.epoch:
            raise Interrupted(f"stopped after epoch {runner.epoch}")

    def after_iter(self, runner: Any) -> None:
        if runner.iter == self.iter:
            raise Interrupted(f"stopped after iteration {runner.iter}")


def state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ckpt = torch.load(path, weights_only=True)
    return ckpt["state_dict"], ckpt["optimizer"]


def assert_same_training_state(a: Path, b: Path) -> None:
    sd_a, opt_a = state(a)
    sd_b, opt_b = state(b)
    assert sd_a.keys() == sd_b.keys()
    for key in sd_a:
        assert torch.equal(sd_a[key], sd_b[key]), key
    for index, s in opt_a["state"].items():
        assert torch.equal(s["momentum_buffer"], opt_b["state"][index]["momentum_buffer"])
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]


def cosine_cfg(**runner: Any) -> dict[str, Any]:
    cfg = tiny_cfg(lr_config={"policy": "CosineAnnealing", "warmup": "linear", "warmup_iters": 5,
                              "warmup_ratio": 0.1, "min_lr_ratio": 0.01})
    cfg["data"]["train"]["num_images"] = 6  # 3 iterations per epoch
    if runner:
        cfg["runner"] = runner
    return cfg


def test_run_directory_logs_and_manifest(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    result = engine.train(tiny_cfg(), work_dir=tmp_path / "run", cfg_source="presets/tiny.yaml",
                          argv=["det", "train", "tiny"], progress=events.append)
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"epoch_1.pth", "epoch_2.pth", "latest.pth", "manifest.json", "tiny.yaml"} <= names
    assert result.json_log is not None and result.json_log.name.endswith(".log.json")
    assert result.text_log is not None and result.text_log.exists()
    assert not [n for n in names if n.endswith(".tmp")]
    assert result.epochs == 2 and result.iters == 8
    assert result.last_checkpoint == run / "epoch_2.pth"
    assert torch.equal(state(run / "latest.pth")[0]["conv.weight"], state(run / "epoch_2.pth")[0]["conv.weight"])
    # resolved config round-trips and sits in the checkpoint too
    saved = yaml.safe_load((run / "tiny.yaml").read_text())
    assert saved["seed"] == 0 and saved["model"]["type"] == "TinyTestDetector"
    assert torch.load(run / "epoch_2.pth", weights_only=True)["meta"]["config"] == saved
    assert torch.load(run / "epoch_2.pth", weights_only=True)["meta"]["classes"] == ["a", "b"]
    # json log: header line, train lines with mmdet keys, val lines with metrics
    lines = [json.loads(line) for line in result.json_log.read_text().splitlines()]
    assert "env_info" in lines[0] and "config" in lines[0]
    train_lines = [line for line in lines if line.get("mode") == "train"]
    val_lines = [line for line in lines if line.get("mode") == "val"]
    assert len(train_lines) == 4 and len(val_lines) == 2
    for line in train_lines:
        assert {"epoch", "iter", "lr", "time", "data_time", "memory", "loss_cls", "loss_bbox", "loss"} <= set(line)
        assert line["loss"] == pytest.approx(line["loss_cls"] + line["loss_bbox"], rel=1e-5)
        assert line["memory"] == 0
    assert [(line["epoch"], line["iter"]) for line in train_lines] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert train_lines[0]["lr"] == pytest.approx(0.1 * (1 - (1 - 1 / 3) * 0.9))  # warmup iter 1
    assert train_lines[2]["lr"] == pytest.approx(0.01)  # step at epoch index 1
    assert [line["epoch"] for line in val_lines] == [1, 2]
    assert {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"} <= set(val_lines[0])
    assert set(result.metrics) >= {"bbox_mAP", "bbox_mAP_50"}
    assert "Epoch [1][2/4]" in result.text_log.read_text()
    # manifest
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["argv"] == ["det", "train", "tiny"]
    assert manifest["status"] == "finished" and manifest["end_time"]
    assert manifest["seed"] == 0 and manifest["device"] == "cpu"
    assert manifest["datasets"]["train"] == {"generator": "TinyTestDataset", "seed": 0, "num_images": 8}
    assert {"torch", "torchvision", "numpy", "pycocotools", "python", "det"} <= set(manifest["versions"])
    assert manifest["config"] == saved
    # progress events: one per train iteration, plus val events
    train_events = [e for e in events if e.phase == "train"]
    assert [e.iter for e in train_events] == list(range(1, 9))
    assert all(e.max == 8 for e in train_events)
    assert train_events[-1].losses["loss"] > 0 and train_events[-1].lr == pytest.approx(0.01)
    assert [e.iter for e in events if e.phase == "val"][-1] == 8


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_after_epoch_equals_uninterrupted_run(tmp_path: Path, workers: int) -> None:
    def cosine_cfg_w() -> dict[str, Any]:
        c = cosine_cfg()
        c["data"]["workers_per_gpu"] = workers  # 1: a persistent worker process
        return c

    full = engine.train(cosine_cfg_w(), work_dir=tmp_path / "full", cfg_source="tiny.yaml")
    cfg = cosine_cfg_w()
    cfg["custom_hooks"] = [{"type": "InterruptHook", "epoch": 1, "priority": "LOWEST"}]
    with pytest.raises(Interrupted):
        engine.train(cfg, work_dir=tmp_path / "resumed", cfg_source="tiny.yaml")
    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["status"].startswith("failed: Interrupted")
    assert not (tmp_path / "resumed" / "epoch_2.pth").exists()
    resumed = engine.train(cosine_cfg_w(), work_dir=tmp_path / "resumed", cfg_source="tiny.yaml", resume=True)
    assert resumed.resumed_from == tmp_path / "resumed" / "latest.pth"
    assert resumed.epochs == 2 and resumed.iters == 6
    assert_same_training_state(full.work_dir / "epoch_2.pth", resumed.work_dir / "epoch_2.pth")
    assert full.metrics == resumed.metrics


def test_resume_mid_epoch_iteration_based_equals_uninterrupted(tmp_path: Path) -> None:
    runner = {"type": "IterBasedRunner", "max_iters": 7}

    def cfg() -> dict[str, Any]:
        c = cosine_cfg(**runner)
        c["lr_config"]["by_epoch"] = False
        c["checkpoint_config"] = {"interval": 2, "by_epoch": False}
        c["evaluation"] = {"interval": 4, "by_epoch": False, "metric": "bbox"}
        return c

    full = engine.train(cfg(), work_dir=tmp_path / "full", cfg_source="tiny.yaml")
    assert full.iters == 7 and (full.work_dir / "iter_7.pth").exists()
    interrupted = cfg()
    interrupted["custom_hooks"] = [{"type": "InterruptHook", "iter": 4, "priority": "LOWEST"}]
    with pytest.raises(Interrupted):
        engine.train(interrupted, work_dir=tmp_path / "res", cfg_source="tiny.yaml")
    resumed = engine.train(cfg(), work_dir=tmp_path / "res", cfg_source="tiny.yaml",
                           resume=str(tmp_path / "res" / "iter_4.pth"))
    assert resumed.iters == 7
    assert_same_training_state(full.work_dir / "iter_7.pth", resumed.work_dir / "iter_7.pth")


def test_resume_without_latest_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="latest.pth"):
        engine.train(tiny_cfg(), work_dir=tmp_path / "empty", cfg_source="tiny.yaml", resume=True)


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_text('{"not": "a checkpoint"}')
    with pytest.raises(CheckpointError, match=str(bad)):
        engine.train(tiny_cfg(), work_dir=tmp_path / "run", cfg_source="tiny.yaml", resume=str(bad))
    assert not (tmp_path / "run").exists()


def test_load_from_skips_head_with_other_num_classes(tmp_path: Path) -> None:
    first = engine.train(tiny_cfg(), work_dir=tmp_path / "a", cfg_source="tiny.yaml", validate=False)
    cfg = tiny_cfg()
    cfg["model"]["num_classes"] = 3
    for split in ("train", "val", "test"):
        cfg["data"][split]["classes"] = ["x", "y", "z"]
    cfg["runner"]["max_epochs"] = 1
    # the tiny model's layers are not classification layers by name: a plain load refuses to leave them random
    with pytest.raises(CheckpointError, match=r"do not fit .*6 of another shape .*--allow-partial"):
        engine.train(cfg, work_dir=tmp_path / "b", cfg_source="tiny.yaml", load_from=str(first.last_checkpoint))
    assert not (tmp_path / "b").exists()
    result = engine.train(cfg, work_dir=tmp_path / "b", cfg_source="tiny.yaml", load_from=str(first.last_checkpoint),
                          allow_partial=True)
    assert result.skipped_weights == [
        "conv.weight", "conv.bias", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
    ]
    assert result.epochs == 1  # started from epoch 0
    meta = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert meta["load_from"] == str(first.last_checkpoint) and meta["skipped_weights"] == result.skipped_weights


def test_num_classes_mismatch_is_reported_before_training(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg["model"]["num_classes"] = 5
    with pytest.raises(ConfigError, match=r"model predicts 5 classes but data.train has 2 .*model.bbox_head.num_classes=2"):
        engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_nan_loss_stops_with_iteration_terms_lr_and_hint(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg["model"]["nan_after"] = 2
    with pytest.raises(TrainingError) as info:
        engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    msg = str(info.value)
    assert "at iteration 3" in msg and "loss_bbox=nan" in msg and "loss_cls=" in msg
    assert "lr=" in msg and "grad_clip" in msg and "lower optimizer.lr" in msg


def test_no_validate_and_seed_recorded(tmp_path: Path) -> None:
    result = engine.train(tiny_cfg(), work_dir=tmp_path / "run", cfg_source="tiny.yaml", validate=False, seed=7)
    assert result.metrics == {} and result.seed == 7
    lines = [json.loads(line) for line in result.json_log.read_text().splitlines()]
    assert not [line for line in lines if line.get("mode") == "val"]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["seed"] == 7


def test_same_seed_same_weights_other_seed_different(tmp_path: Path) -> None:
    a = engine.train(tiny_cfg(), work_dir=tmp_path / "a", cfg_source="t.yaml", validate=False, seed=1)
    b = engine.train(tiny_cfg(), work_dir=tmp_path / "b", cfg_source="t.yaml", validate=False, seed=1)
    c = engine.train(tiny_cfg(), work_dir=tmp_path / "c", cfg_source="t.yaml", validate=False, seed=2)
    assert torch.equal(state(a.last_checkpoint)[0]["conv.weight"], state(b.last_checkpoint)[0]["conv.weight"])
    assert not torch.equal(state(a.last_checkpoint)[0]["conv.weight"], state(c.last_checkpoint)[0]["conv.weight"])


def test_max_keep_ckpts_and_save_best(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg["runner"]["max_epochs"] = 4
    cfg["checkpoint_config"] = {"interval": 1, "max_keep_ckpts": 2}
    cfg["evaluation"] = {"interval": 1, "metric": "bbox", "save_best": "auto", "rule": "less"}
    result = engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    names = sorted(p.name for p in (tmp_path / "run").glob("*.pth"))
    best = [n for n in names if n.startswith("best_")]
    assert [n for n in names if n.startswith("epoch_")] == ["epoch_3.pth", "epoch_4.pth"]
    assert len(best) == 1 and best[0].startswith("best_bbox_mAP_epoch_")
    assert result.best_checkpoint == tmp_path / "run" / best[0]
    meta = torch.load(result.best_checkpoint, weights_only=True)["meta"]
    assert meta["best"]["key"] == "bbox_mAP" and meta["best"]["rule"] == "less"


def test_auto_scale_lr_applied_and_logged(tmp_path: Path) -> None:
    cfg = tiny_cfg(auto_scale_lr={"enable": False, "base_batch_size": 4})
    cfg["lr_config"] = None
    result = engine.train(cfg, work_dir=tmp_path / "run", cfg_source="t.yaml", validate=False, auto_scale_lr=True)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["meta"]["config"]["optimizer"]["lr"] == pytest.approx(0.1 * 2 / 4)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05)
    assert "auto-scale-lr: lr 0.1 -> 0.05" in result.text_log.read_text()  # set-up lines reach the text log


def test_cuda_unavailable_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DetError, match="CUDA is not available"):
        engine.train(tiny_cfg(), work_dir=tmp_path / "run", cfg_source="t.yaml", device="cuda")
    with pytest.raises(DetError, match="unknown device"):
        engine.train(tiny_cfg(), work_dir=tmp_path / "run", cfg_source="t.yaml", device="tpu")


def test_config_typo_names_source_and_key(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    cfg["optimizer"]["type"] = "SDG"
    with pytest.raises(ConfigError, match=r"^t.yaml: optimizer.type: unknown optimizer 'SDG'"):
        engine.train(cfg, work_dir=tmp_path / "run", cfg_source="t.yaml")
    assert not (tmp_path / "run").exists()


def test_input_config_is_not_modified(tmp_path: Path) -> None:
    cfg = tiny_cfg()
    before = copy.deepcopy(cfg)
    engine.train(cfg, work_dir=tmp_path / "run", cfg_source="t.yaml", validate=False, auto_scale_lr=True)
    assert cfg == before


def test_wrapped_datasets_train_and_validate(tmp_path: Path) -> None:
    cfg = tiny_cfg(runner={"type": "EpochBasedRunner", "max_epochs": 1})
    cfg["data"]["train"] = {"type": "RepeatDataset", "times": 2, "dataset": {"type": "TinyTestDataset", "num_images": 8}}
    cfg["data"]["val"] = [{"type": "TinyTestDataset", "num_images": 4}, {"type": "TinyTestDataset", "num_images": 2, "seed": 1}]
    result = engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    assert result.iters == 8  # 16 images per epoch, batch 2
    assert {"0_bbox_mAP", "1_bbox_mAP"} <= set(result.metrics)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["datasets"]["train"]["type"] == "RepeatDataset" and manifest["datasets"]["train"]["num_images"] == 16
    assert [d["num_images"] for d in manifest["datasets"]["val"]["datasets"]] == [4, 2]


def test_early_eta_line_after_the_first_iterations(tmp_path: Path) -> None:
    from detcli.engine.hooks import EARLY_ETA_ITERS

    cfg = cosine_cfg(type="IterBasedRunner", max_iters=EARLY_ETA_ITERS + 2)
    cfg["lr_config"]["by_epoch"] = False
    cfg["log_config"] = {"interval": 50}
    cfg["checkpoint_config"] = {"interval": 100, "by_epoch": False}
    result = engine.train(cfg, work_dir=tmp_path / "run", cfg_source="t.yaml", validate=False)
    lines = [line for line in result.text_log.read_text().splitlines() if "s/iteration over the first" in line]
    assert len(lines) == 1, lines
    assert f"over the first {EARLY_ETA_ITERS} iterations" in lines[0] and "left for 2 iterations" in lines[0]
