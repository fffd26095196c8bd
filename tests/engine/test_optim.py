"""Optimizers by type, paramwise options and the linear lr scaling rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcli.engine.optim import auto_scale_lr, build_optimizer, scale_lr
from detcli.errors import ConfigError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)
        self.gn = nn.GroupNorm(1, 2)
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def groups_by_param(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in opt.param_groups for p in g["params"]}


def test_sgd_by_type_with_kwargs_and_frozen_params_left_out() -> None:
    model = Net()
    opt = build_optimizer(model, {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4})
    assert isinstance(opt, torch.optim.SGD)
    assert len(opt.param_groups) == 1
    assert opt.param_groups[0]["momentum"] == 0.9
    params = opt.param_groups[0]["params"]
    assert len(params) == 8  # frozen Linear weight/bias excluded
    assert all(p.requires_grad for p in params)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_any_torch_optim(name: str) -> None:
    opt = build_optimizer(Net(), {"type": name, "lr": 0.001})
    assert type(opt).__name__ == name


def test_unknown_optimizer_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="optimizer.type: unknown optimizer 'SDG' — did you mean 'SGD'"):
        build_optimizer(Net(), {"type": "SDG", "lr": 0.1})


def test_unknown_optimizer_key_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="optimizer.momentun.*did you mean 'momentum'"):
        build_optimizer(Net(), {"type": "SGD", "lr": 0.1, "momentun": 0.9})


def test_no_decay_on_norm_and_bias() -> None:
    model = Net()
    opt = build_optimizer(model, {"type": "SGD", "lr": 0.1, "weight_decay": 0.01,
                                  "paramwise_cfg": {"norm_decay_mult": 0.0, "bias_decay_mult": 0.0}})
    g = groups_by_param(opt, model)
    assert g["backbone.0.weight"]["weight_decay"] == 0.01
    assert g["backbone.0.bias"]["weight_decay"] == 0.0
    assert g["backbone.1.weight"]["weight_decay"] == 0.0  # BatchNorm
    assert g["backbone.1.bias"]["weight_decay"] == 0.0
    assert g["gn.weight"]["weight_decay"] == 0.0  # GroupNorm
    assert g["head.weight"]["weight_decay"] == 0.01
    assert all(gr["lr"] == 0.1 for gr in opt.param_groups)
    assert "frozen.weight" not in g
    assert len(opt.param_groups) == 2  # parameters with equal settings share a group


def test_custom_keys_longest_match_wins_and_bias_lr_mult() -> None:
    model = Net()
    opt = build_optimizer(model, {
        "type": "SGD", "lr": 0.1, "weight_decay": 0.01,
        "paramwise_cfg": {"custom_keys": {"backbone": {"lr_mult": 0.1}, "backbone.1": {"lr_mult": 0.5, "decay_mult": 0.0}},
                          "bias_lr_mult": 2.0},
    })
    g = groups_by_param(opt, model)
    assert g["backbone.0.weight"]["lr"] == pytest.approx(0.01)
    assert g["backbone.0.bias"]["lr"] == pytest.approx(0.01)  # custom key wins over bias rule
    assert g["backbone.1.weight"]["lr"] == pytest.approx(0.05)
    assert g["backbone.1.weight"]["weight_decay"] == 0.0
    assert g["head.bias"]["lr"] == pytest.approx(0.2)
    assert g["head.weight"]["lr"] == pytest.approx(0.1)


def test_bad_paramwise_key() -> None:
    with pytest.raises(ConfigError, match="paramwise_cfg.norm_decay.*did you mean 'norm_decay_mult'"):
        build_optimizer(Net(), {"type": "SGD", "lr": 0.1, "paramwise_cfg": {"norm_decay": 0.0}})


def test_scale_lr_spec_example() -> None:
    # lr 0.01 tuned for 4 GPUs x 2 images (base batch 8) -> 16 GPUs x 4 images = 0.08
    assert scale_lr(0.01, samples_per_gpu=4, world_size=16, base_batch_size=8) == pytest.approx(0.08)
    assert scale_lr(0.02, samples_per_gpu=2, world_size=8, base_batch_size=16) == pytest.approx(0.02)


def test_auto_scale_lr_disabled_unless_flag_or_enable() -> None:
    cfg = {"optimizer": {"type": "SGD", "lr": 0.01}, "data": {"samples_per_gpu": 4},
           "auto_scale_lr": {"enable": False, "base_batch_size": 8}}
    assert auto_scale_lr(cfg, flag=False, world_size=16) is None
    assert cfg["optimizer"]["lr"] == 0.01
    assert auto_scale_lr(cfg, flag=True, world_size=16) == pytest.approx(0.08)
    assert cfg["optimizer"]["lr"] == pytest.approx(0.08)
    cfg2 = {"optimizer": {"type": "SGD", "lr": 0.02}, "data": {"samples_per_gpu": 2}, "auto_scale_lr": {"enable": True}}
    assert auto_scale_lr(cfg2, flag=False, world_size=1) == pytest.approx(0.02 * 2 / 16)
