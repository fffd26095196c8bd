"""Learning-rate schedules: warmup and policies, mmcv semantics."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.engine.lr import LrSchedule
from detcli.errors import ConfigError

IPE = 100  # iterations per epoch


def curve(s: LrSchedule, base: float = 0.02, epochs: int = 12) -> list[float]:
    return [s.lr(base, epoch=it // IPE, iter=it, iters_per_epoch=IPE) for it in range(epochs * IPE)]


def test_step_with_linear_warmup_matches_spec() -> None:
    s = LrSchedule.from_config(
        {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001, "step": [8, 11]},
        max_epochs=12, max_iters=None,
    )
    lrs = curve(s)
    assert lrs[0] == pytest.approx(0.02 * 0.001)
    # linear growth during warmup: constant increments
    diffs = [lrs[i + 1] - lrs[i] for i in range(0, 499)]
    assert max(diffs) == pytest.approx(min(diffs))
    assert lrs[250] == pytest.approx(0.02 * (1 - 0.5 * (1 - 0.001)))
    assert lrs[500] == pytest.approx(0.02)
    assert lrs[8 * IPE - 1] == pytest.approx(0.02)
    assert lrs[8 * IPE] == pytest.approx(0.002)  # epoch 8 -> x0.1
    assert lrs[11 * IPE] == pytest.approx(0.0002)  # epoch 11 -> x0.01


def test_exp_and_constant_warmup() -> None:
    exp = LrSchedule("fixed", 12, warmup="exp", warmup_iters=10, warmup_ratio=0.01)
    assert exp.lr(1.0, epoch=0, iter=0, iters_per_epoch=IPE) == pytest.approx(0.01)
    assert exp.lr(1.0, epoch=0, iter=5, iters_per_epoch=IPE) == pytest.approx(0.01**0.5)
    assert exp.lr(1.0, epoch=0, iter=10, iters_per_epoch=IPE) == 1.0
    const = LrSchedule("fixed", 12, warmup="constant", warmup_iters=10, warmup_ratio=0.25)
    assert const.lr(1.0, epoch=0, iter=9, iters_per_epoch=IPE) == 0.25
    assert const.lr(1.0, epoch=0, iter=10, iters_per_epoch=IPE) == 1.0


def test_warmup_by_epoch_counts_epochs() -> None:
    s = LrSchedule("fixed", 12, warmup="constant", warmup_iters=2, warmup_ratio=0.5, warmup_by_epoch=True)
    assert s.lr(1.0, epoch=1, iter=199, iters_per_epoch=IPE) == 0.5
    assert s.lr(1.0, epoch=2, iter=200, iters_per_epoch=IPE) == 1.0


def test_step_int_period_gamma_and_min_lr() -> None:
    s = LrSchedule("step", 12, step=3, gamma=0.5, min_lr=0.3)
    assert [s.regular_factor(e) for e in (0, 2, 3, 6, 9)] == [1.0, 1.0, 0.5, 0.3, 0.3]


def test_cosine_annealing_min_lr_ratio_and_min_lr() -> None:
    s = LrSchedule("CosineAnnealing", 10, min_lr_ratio=0.01)
    assert s.regular_factor(0) == 1.0
    assert s.regular_factor(5) == pytest.approx(0.01 + 0.5 * 0.99)
    assert s.regular_factor(10) == pytest.approx(0.01)
    s2 = LrSchedule("CosineAnnealing", 10, min_lr=0.0)
    assert s2.lr(2.0, epoch=5, iter=500, iters_per_epoch=IPE) == pytest.approx(1.0)


def test_poly_by_iteration() -> None:
    s = LrSchedule.from_config({"policy": "poly", "power": 0.9, "min_lr": 1e-4, "by_epoch": False}, max_epochs=None, max_iters=1000)
    assert not s.by_epoch
    assert s.lr(0.01, epoch=0, iter=0, iters_per_epoch=IPE) == pytest.approx(0.01)
    expected = (0.01 - 1e-4) * (1 - 500 / 1000) ** 0.9 + 1e-4
    assert s.lr(0.01, epoch=5, iter=500, iters_per_epoch=IPE) == pytest.approx(expected)
    assert s.lr(0.01, epoch=10, iter=1000, iters_per_epoch=IPE) == pytest.approx(1e-4)


def test_iter_runner_schedules_by_iteration() -> None:
    s = LrSchedule.from_config({"policy": "step", "step": [300]}, max_epochs=None, max_iters=400)
    assert not s.by_epoch
    assert s.lr(1.0, epoch=0, iter=299, iters_per_epoch=IPE) == 1.0
    assert s.lr(1.0, epoch=0, iter=300, iters_per_epoch=IPE) == pytest.approx(0.1)


def test_no_lr_config_is_fixed() -> None:
    s = LrSchedule.from_config(None, max_epochs=3, max_iters=None)
    assert all(v == 0.5 for v in curve(s, 0.5, 3))


def test_lr_is_a_pure_function_of_position() -> None:
    s = LrSchedule("CosineAnnealing", 12, min_lr_ratio=0.0, warmup="linear", warmup_iters=50, warmup_ratio=0.1)
    a = curve(s)
    b = curve(s)
    assert a == b and not any(math.isnan(v) for v in a)


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"policy": "stpe", "step": [8]}, "unknown policy 'stpe' — did you mean 'step'"),
        ({"policy": "step"}, "needs 'step'"),
        ({"policy": "step", "step": [8], "warmup": "linaer"}, "unknown warmup 'linaer' — did you mean 'linear'"),
        ({"policy": "step", "step": [8], "gama": 0.5}, "lr_config.gama.*did you mean 'gamma'"),
        ({"policy": "CosineAnnealing"}, "exactly one of 'min_lr' and 'min_lr_ratio'"),
        ({"policy": "step", "step": [8], "warmup": "linear", "warmup_ratio": 0}, "warmup_ratio must be in"),
    ],
)
def test_bad_lr_config(cfg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LrSchedule.from_config(cfg, max_epochs=12, max_iters=None)


# ----------------------------------------------------------------------------- Cyclic / OneCycle / CosineRestart
def _iter_lrs(s: LrSchedule, base: float, n: int, ipe: int = 10) -> list[float]:
    return [s.lr(base, epoch=i // ipe, iter=i, iters_per_epoch=ipe) for i in range(n)]


def test_cyclic_cos_hand_computed() -> None:
    # 20 iterations, 2 cycles of 10; up phase int(0.4 * 10) = 4 iterations from 1x to 10x, then 10x -> 1e-4x
    s = LrSchedule.from_config({"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 2, "step_ratio_up": 0.4},
                               max_epochs=None, max_iters=20)
    assert s.by_epoch is False
    lrs = _iter_lrs(s, 0.1, 20)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[2] == pytest.approx(1.0 + 0.5 * (0.1 - 1.0) * (math.cos(math.pi * 0.5) + 1))  # halfway up: 0.55
    assert lrs[2] == pytest.approx(0.55)
    assert lrs[4] == pytest.approx(1.0)  # the peak opens the down phase
    assert lrs[7] == pytest.approx(1e-5 + 0.5 * (1.0 - 1e-5) * (math.cos(math.pi * 3 / 6) + 1))
    assert lrs[10] == pytest.approx(0.1) and lrs[14] == pytest.approx(1.0)  # second cycle repeats (gamma 1)


def test_cyclic_gamma_shrinks_later_peaks_and_linear_strategy() -> None:
    s = LrSchedule.from_config({"policy": "Cyclic", "target_ratio": [5, 1], "cyclic_times": 2, "step_ratio_up": 0.5,
                                "gamma": 0.5, "anneal_strategy": "linear"}, max_epochs=None, max_iters=8)
    lrs = _iter_lrs(s, 1.0, 8)
    # cycle 0: up 1 -> 5 over 2 iterations, down 5 -> 1 over 2; cycle 1 peak 1 - 0.5 + 5 * 0.5 = 3
    assert lrs == pytest.approx([1.0, 3.0, 5.0, 3.0, 1.0, 2.0, 3.0, 2.0])


def test_cyclic_linear_equals_torch_cyclic_lr() -> None:
    n, up = 30, 12  # step_ratio_up 0.4 of 30
    s = LrSchedule.from_config({"policy": "cyclic", "target_ratio": [4, 1], "anneal_strategy": "linear"},
                               max_epochs=None, max_iters=n)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    ref = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.04, step_size_up=up, step_size_down=n - up,
                                            cycle_momentum=False)
    expected = []
    for _ in range(n):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert _iter_lrs(s, 0.01, n) == pytest.approx(expected, rel=1e-12)


def test_cyclic_on_an_epoch_based_run_uses_all_iterations() -> None:
    s = LrSchedule.from_config({"policy": "cyclic", "target_ratio": [10, 1], "step_ratio_up": 0.5,
                                "anneal_strategy": "linear"}, max_epochs=2, max_iters=None)
    # 2 epochs of 10 iterations: up over 10 iterations, peak at iteration 10
    assert s.lr(1.0, epoch=0, iter=5, iters_per_epoch=10) == pytest.approx(5.5)
    assert s.lr(1.0, epoch=1, iter=10, iters_per_epoch=10) == pytest.approx(10.0)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_one_cycle_equals_torch_one_cycle_lr(three_phase: bool, strategy: str) -> None:
    n = 50
    s = LrSchedule.from_config({"policy": "OneCycle", "max_lr": 0.2, "pct_start": 0.25, "anneal_strategy": strategy,
                                "div_factor": 20, "final_div_factor": 100, "three_phase": three_phase},
                               max_epochs=None, max_iters=n)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=123.0, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=n, pct_start=0.25, anneal_strategy=strategy,
                                              div_factor=20, final_div_factor=100, three_phase=three_phase,
                                              cycle_momentum=False)
    expected = []
    for _ in range(n):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    base = s.initial_lr(0, 1, 123.0)
    assert base == pytest.approx(0.01)  # max_lr / div_factor; optimizer.lr is not used
    assert _iter_lrs(s, base, n) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_one_cycle_hand_computed_and_total_steps() -> None:
    # total 100 steps, peak at 0.3 * 100 - 1 = 29
    s = LrSchedule.from_config({"policy": "OneCycle", "max_lr": 1.0, "total_steps": 100}, max_epochs=None, max_iters=40)
    base = s.initial_lr(0, 1, 0.5)
    assert base == pytest.approx(0.04)
    assert s.lr(base, epoch=0, iter=29, iters_per_epoch=10) == pytest.approx(1.0)
    mid = 0.04 / 1e4 + 0.5 * (1.0 - 0.04 / 1e4) * (math.cos(math.pi * 35 / 70) + 1)
    assert s.lr(base, epoch=0, iter=64, iters_per_epoch=10) == pytest.approx(mid)
    with pytest.raises(ConfigError, match="total_steps: 30 is fewer than the run's 40 iterations"):
        LrSchedule.from_config({"policy": "OneCycle", "max_lr": 1.0, "total_steps": 30},
                               max_epochs=None, max_iters=40).check_run(40)
    per_group = LrSchedule.from_config({"policy": "OneCycle", "max_lr": [1.0, 0.5]}, max_epochs=None, max_iters=40)
    assert [per_group.initial_lr(i, 2, 9.0) for i in range(2)] == [0.04, 0.02]
    with pytest.raises(ConfigError, match="max_lr: 2 values for 3 parameter groups"):
        per_group.initial_lr(0, 3, 9.0)


def test_cosine_restart_hand_computed() -> None:
    s = LrSchedule.from_config({"policy": "CosineRestart", "periods": [4, 6], "restart_weights": [1, 0.5],
                                "min_lr": 0.0}, max_epochs=10, max_iters=None)
    f = [s.regular_factor(e, 1.0) for e in range(10)]
    assert f[0] == 1.0
    assert f[2] == pytest.approx(0.5)  # half of the first 4-epoch period
    assert f[4] == pytest.approx(0.5)  # restart at weight 0.5
    assert f[7] == pytest.approx(0.25)  # half of the second period: 0.5 * 0.5
    assert f[9] == pytest.approx(0.25 * (math.cos(math.pi * 5 / 6) + 1))
    ratio = LrSchedule.from_config({"policy": "CosineRestart", "periods": [5], "min_lr_ratio": 0.1,
                                    "warmup": "linear", "warmup_iters": 10, "warmup_ratio": 0.5},
                                   max_epochs=5, max_iters=None)
    assert ratio.lr(2.0, epoch=0, iter=0, iters_per_epoch=100) == pytest.approx(1.0)  # warmup on top
    assert ratio.lr(2.0, epoch=4, iter=400, iters_per_epoch=100) == pytest.approx(
        0.2 + 0.5 * 1.8 * (math.cos(math.pi * 4 / 5) + 1))


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"policy": "CosineRestart", "periods": [4, 4], "restart_weights": [1, 1], "min_lr": 0}, "cover 8 epochs, the run has 12"),
        ({"policy": "CosineRestart", "periods": [12], "restart_weights": [1, 1], "min_lr": 0}, "restart_weights: one number per period"),
        ({"policy": "CosineRestart", "periods": [12]}, "exactly one of 'min_lr' and 'min_lr_ratio'"),
        ({"policy": "Cyclic", "by_epoch": True}, "Cyclic policy is per iteration"),
        ({"policy": "Cyclic", "step_ratio_up": 1.0}, r"step_ratio_up: must be in \[0, 1\)"),
        ({"policy": "Cyclic", "anneal_strategy": "tri"}, "anneal_strategy: must be 'cos' or 'linear'"),
        ({"policy": "Cyclic", "target_ratio": "x"}, "target_ratio: expected a number or"),
        ({"policy": "OneCycle"}, "needs max_lr"),
        ({"policy": "OneCycle", "max_lr": 1, "pct_start": 2}, "pct_start"),
        ({"policy": "OneCycle", "max_lr": 1, "periods": [1]}, "not an option of the 'OneCycle' policy"),
    ],
)
def test_bad_new_policies(cfg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LrSchedule.from_config(cfg, max_epochs=12, max_iters=None)


# ----------------------------------------------------------------------------- momentum
def test_cyclic_momentum_hand_computed() -> None:
    from detcli.engine.lr import MomentumSchedule

    m = MomentumSchedule.from_config({"policy": "cyclic", "target_ratio": [0.5, 1.0], "step_ratio_up": 0.5,
                                      "anneal_strategy": "linear"}, max_epochs=None, max_iters=8)
    assert m is not None
    got = [m.momentum(0.9, iter=i, iters_per_epoch=4) for i in range(8)]
    assert got == pytest.approx([0.9, 0.7875, 0.675, 0.5625, 0.45, 0.5625, 0.675, 0.7875])
    assert MomentumSchedule.from_config(None, max_epochs=1, max_iters=None) is None


def test_one_cycle_momentum_equals_torch() -> None:
    from detcli.engine.hooks import MomentumUpdaterHook
    from detcli.engine.lr import MomentumSchedule

    n = 40
    m = MomentumSchedule.from_config({"policy": "OneCycle", "base_momentum": 0.8, "max_momentum": 0.9,
                                      "pct_start": 0.3}, max_epochs=None, max_iters=n)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.5)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=n, pct_start=0.3, base_momentum=0.8,
                                              max_momentum=0.9)
    expected = []
    for _ in range(n):
        expected.append(opt.param_groups[0]["momentum"])
        opt.step()
        ref.step()
    mine = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1, betas=(0.5, 0.99))
    hook = MomentumUpdaterHook(m, mine)
    assert mine.param_groups[0]["betas"] == (0.9, 0.99)  # starts at max_momentum, as mmcv

    class R:
        optimizer = mine
        iters_per_epoch = 10
        iter = 0

    got = []
    for i in range(n):
        R.iter = i
        hook.before_iter(R)  # type: ignore[arg-type]
        got.append(mine.param_groups[0]["betas"][0])
        assert mine.param_groups[0]["betas"][1] == 0.99
    assert got == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match="optimizer Adagrad has no momentum or betas"):
        MomentumUpdaterHook(m, torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]))


def test_bad_momentum_config() -> None:
    from detcli.engine.lr import MomentumSchedule

    with pytest.raises(ConfigError, match="momentum_config.policy: unknown policy 'step'"):
        MomentumSchedule.from_config({"policy": "step"}, max_epochs=1, max_iters=None)
    with pytest.raises(ConfigError, match="momentum_config.max_lr: not an option"):
        MomentumSchedule.from_config({"policy": "OneCycle", "max_lr": 1}, max_epochs=1, max_iters=None)
    with pytest.raises(ConfigError, match="per iteration"):
        MomentumSchedule.from_config({"policy": "cyclic", "by_epoch": True}, max_epochs=1, max_iters=None)


def test_momentum_warmup_divides_as_mmcv() -> None:
    from detcli.engine.lr import MomentumSchedule

    m = MomentumSchedule.from_config({"policy": "cyclic", "target_ratio": [0.5, 1.0], "step_ratio_up": 0.5,
                                      "anneal_strategy": "linear", "warmup": "linear", "warmup_iters": 4,
                                      "warmup_ratio": 0.9}, max_epochs=None, max_iters=8)
    assert m is not None
    # iteration 2: regular 0.9 * 0.75 = 0.675, divided by 1 - (1 - 2 / 4) * (1 - 0.9) = 0.95
    assert m.momentum(0.9, iter=2, iters_per_epoch=4) == pytest.approx(0.675 / 0.95)
    assert m.momentum(0.9, iter=4, iters_per_epoch=4) == pytest.approx(0.45)  # warmup over
