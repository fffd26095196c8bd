"""Learning-rate schedules: warmup and policies, mmcv semantics."""

from __future__ import annotations

import math

import pytest

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
