"""Training keys that change behaviour: gradient accumulation, the workflow's val phase, fp16 / --amp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import detcli.engine as engine
import detcli.engine.amp as amp
from detcli.data import build_dataloader
from detcli.errors import ConfigError
from detcli.registry import DETECTORS

from engine_helpers import TinyTestDataset, TinyTestDetector, tiny_cfg


@DETECTORS.register()
class TinyNoNormDetector(TinyTestDetector):
    """:class:`TinyTestDetector` without BatchNorm and dropout: its loss is a mean over the images of a batch,
    so gradients of two half batches add up to the gradient of the whole batch."""

    def __init__(self, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(num_classes=num_classes, dropout=0.0, **kwargs)
        self.norm = nn.Identity()


@DETECTORS.register()
class AutocastProbeDetector(TinyNoNormDetector):
    """Records whether the training forward pass ran under autocast, and in which dtype."""

    seen: list[tuple[bool, torch.dtype]] = []

    def loss(self, images: Any, targets: Any) -> dict[str, torch.Tensor]:
        AutocastProbeDetector.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return super().loss(images, targets)


def plain_cfg(**overrides: Any) -> dict[str, Any]:
    """One epoch, fixed lr, no evaluation: the weights depend only on the gradient steps."""
    cfg = tiny_cfg(model={"type": "TinyNoNormDetector", "num_classes": 2}, lr_config=None,
                   runner={"type": "EpochBasedRunner", "max_epochs": 1}, **overrides)
    del cfg["data"]["val"]
    cfg["evaluation"] = {"interval": 1, "metric": "bbox"}
    return cfg


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_shuffled_order_does_not_depend_on_the_batch_size() -> None:
    ds = TinyTestDataset(num_images=6)
    orders = []
    for batch in (2, 4):
        loader = build_dataloader(ds, batch, 0, shuffle=True, seed=0)
        orders.append(list(loader.sampler))
    assert orders[0] == orders[1]


@pytest.mark.parametrize("num_images", [8, 6])  # 6: the last group is a remainder of 1 iteration
def test_gradient_accumulation_equals_a_larger_batch(tmp_path: Path, num_images: int) -> None:
    """Batch 2 with cumulative_iters 2 ends with the weights of batch 4 (momentum, weight decay and
    gradient clipping included); with 6 images the 3rd iteration is its own group (loss / 1), as batch 4's
    last batch of 2."""
    accumulated = plain_cfg(optimizer_config={"type": "GradientCumulativeOptimizerHook", "cumulative_iters": 2,
                                              "grad_clip": {"max_norm": 0.05}})
    accumulated["data"]["train"]["num_images"] = num_images
    big = plain_cfg(optimizer_config={"grad_clip": {"max_norm": 0.05}})
    big["data"]["train"]["num_images"] = num_images
    big["data"]["samples_per_gpu"] = 4
    a = engine.train(accumulated, work_dir=tmp_path / "a", cfg_source="acc.yaml")
    b = engine.train(big, work_dir=tmp_path / "b", cfg_source="big.yaml")
    assert a.iters == num_images // 2 and b.iters == -(-num_images // 4)
    wa, wb = weights(tmp_path / "a" / "epoch_1.pth"), weights(tmp_path / "b" / "epoch_1.pth")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)
    # and it is not what batch 2 without accumulation gives
    small = plain_cfg(optimizer_config={"grad_clip": {"max_norm": 0.05}})
    small["data"]["train"]["num_images"] = num_images
    c = engine.train(small, work_dir=tmp_path / "c", cfg_source="small.yaml")
    assert not torch.allclose(weights(c.last_checkpoint)["conv.weight"], wb["conv.weight"], atol=1e-4)


def test_workflow_val_phase_logs_the_validation_loss(tmp_path: Path) -> None:
    cfg = tiny_cfg(workflow=[["train", 1], ["val", 1]])
    result = engine.train(cfg, work_dir=tmp_path / "wf", cfg_source="wf.yaml")
    lines = [json.loads(x) for x in result.json_log.read_text().splitlines()[1:]]
    val_loss = [x for x in lines if x["mode"] == "val" and "loss" in x and "bbox_mAP" not in x]
    assert [x["epoch"] for x in val_loss] == [1, 2]
    assert all(x["iter"] == 4 for x in val_loss)  # 8 val images in batches of 2 (the training batch, as mmdet)
    assert {"loss_cls", "loss_bbox", "loss"} <= set(val_loss[0])
    # the logged value is the eval-mode loss of the epoch-1 weights on data.val with the training pipeline
    model = engine.load_model(tmp_path / "wf" / "epoch_1.pth").model.eval()
    ds = TinyTestDataset(num_images=8)
    total, n = {}, 0
    with torch.no_grad():
        for batch in build_dataloader(ds, 2, 0, shuffle=False):
            losses = model(batch.images, batch.targets)
            for k in ("loss_cls", "loss_bbox"):
                total[k] = total.get(k, 0.0) + float(losses[k]) * len(batch.images)
            n += len(batch.images)
    assert val_loss[0]["loss_cls"] == pytest.approx(total["loss_cls"] / n, rel=1e-5)
    assert val_loss[0]["loss_bbox"] == pytest.approx(total["loss_bbox"] / n, rel=1e-5)
    assert "Epoch(val) [1][4]" in result.text_log.read_text()
    # the val phase does not change training (no gradient, BN frozen, RNG untouched)
    plain = engine.train(tiny_cfg(), work_dir=tmp_path / "plain", cfg_source="plain.yaml")
    for key, value in weights(plain.last_checkpoint).items():
        assert torch.equal(value, weights(result.last_checkpoint)[key]), key


def test_iteration_based_workflow_val_every_n_iterations(tmp_path: Path) -> None:
    cfg = tiny_cfg(runner={"type": "IterBasedRunner", "max_iters": 6}, workflow=[["train", 3], ["val", 2]],
                   checkpoint_config={"interval": 3, "by_epoch": False}, evaluation={"interval": 100, "metric": "bbox"})
    result = engine.train(cfg, work_dir=tmp_path / "it", cfg_source="it.yaml")
    lines = [json.loads(x) for x in result.json_log.read_text().splitlines()[1:]]
    val = [x for x in lines if x["mode"] == "val" and "loss" in x]
    assert [x["iter"] for x in val] == [2, 2]


def test_fp16_on_cpu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fp16 / --amp: mixed precision needs a CUDA GPU"):
        engine.train(tiny_cfg(fp16={"loss_scale": "dynamic"}), work_dir=tmp_path / "r", cfg_source="r.yaml")
    with pytest.raises(ConfigError, match=r"fp16 / --amp"):
        engine.train(tiny_cfg(), work_dir=tmp_path / "r", cfg_source="r.yaml", amp=True)
    assert not (tmp_path / "r").exists()


def test_amp_flag_on_cpu_cli_refusal(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from detcli.cli import app

    out = CliRunner().invoke(app, ["train", "quickstart", "--amp", "--work-dir", str(tmp_path / "q")])
    assert out.exit_code != 0 and "--amp" in out.output and "CUDA" in out.output


def amp_cfg(loss_scale: Any, **kw: Any) -> dict[str, Any]:
    cfg = tiny_cfg(model={"type": "AutocastProbeDetector", "num_classes": 2}, fp16={"loss_scale": loss_scale}, **kw)
    cfg["evaluation"] = {"interval": 100, "metric": "bbox"}
    return cfg


def test_amp_wiring_with_cpu_autocast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU autocast stands in for CUDA (amp.ALLOW_CPU): forward under float16 autocast, the dynamic scale
    grows every growth_interval clean steps, checkpoints keep the scaler and --resume restores it."""
    monkeypatch.setattr(amp, "ALLOW_CPU", True)
    AutocastProbeDetector.seen.clear()
    scale = {"init_scale": 256.0, "growth_interval": 2}
    engine.train(amp_cfg(scale), work_dir=tmp_path / "full", cfg_source="amp.yaml")
    assert AutocastProbeDetector.seen and all(s == (True, torch.float16) for s in AutocastProbeDetector.seen)
    ck1 = torch.load(tmp_path / "full" / "epoch_1.pth", weights_only=True)
    ck2 = torch.load(tmp_path / "full" / "epoch_2.pth", weights_only=True)
    assert ck1["meta"]["fp16"]["loss_scaler"]["scale"] == 256.0 * 2 ** 2  # 4 clean steps, growth every 2
    assert ck2["meta"]["fp16"]["loss_scaler"]["scale"] == 256.0 * 2 ** 4
    # resume from epoch 1: the scaler continues from 1024 and the run ends as the uninterrupted one
    (tmp_path / "part").mkdir()
    import shutil

    shutil.copy(tmp_path / "full" / "epoch_1.pth", tmp_path / "part" / "epoch_1.pth")
    resumed = engine.train(amp_cfg(scale), work_dir=tmp_path / "part", cfg_source="amp.yaml",
                           resume=str(tmp_path / "part" / "epoch_1.pth"))
    ck = torch.load(resumed.last_checkpoint, weights_only=True)
    assert ck["meta"]["fp16"]["loss_scaler"] == ck2["meta"]["fp16"]["loss_scaler"]
    for key, value in ck2["state_dict"].items():
        assert torch.equal(value, ck["state_dict"][key]), key


def test_static_loss_scale_stays_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amp, "ALLOW_CPU", True)
    result = engine.train(amp_cfg(512), work_dir=tmp_path / "s", cfg_source="s.yaml")
    ck = torch.load(result.last_checkpoint, weights_only=True)
    assert ck["meta"]["fp16"]["loss_scaler"]["scale"] == 512.0


def test_bf16_autocast_has_no_scaler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amp, "ALLOW_CPU", True)
    AutocastProbeDetector.seen.clear()
    cfg = amp_cfg("dynamic")
    cfg["fp16"]["dtype"] = "bfloat16"
    result = engine.train(cfg, work_dir=tmp_path / "b", cfg_source="b.yaml")
    assert set(AutocastProbeDetector.seen) == {(True, torch.bfloat16)}
    assert torch.load(result.last_checkpoint, weights_only=True)["meta"]["fp16"] == {"loss_scaler": None}


def test_log_level_filters_the_text_log(tmp_path: Path) -> None:
    quiet = engine.train(tiny_cfg(log_level="WARNING"), work_dir=tmp_path / "q", cfg_source="q.yaml")
    loud = engine.train(tiny_cfg(), work_dir=tmp_path / "l", cfg_source="l.yaml")
    assert "INFO" in loud.text_log.read_text() and "Epoch [1][2/4]" in loud.text_log.read_text()
    assert "INFO" not in quiet.text_log.read_text()
    assert quiet.json_log.read_text().count('"mode": "train"') == loud.json_log.read_text().count('"mode": "train"')
