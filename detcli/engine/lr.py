"""Learning-rate schedules with warmup, mmcv ``LrUpdaterHook`` semantics.

The lr is a pure function of ``(epoch, iter)``, so a resumed run lands on the same value:

``lr_config: {policy: step, warmup: linear, warmup_iters: 500, warmup_ratio: 0.001, step: [8, 11]}``

- The *regular* lr follows the policy, per epoch (``by_epoch: true``, the default; ``epoch`` is
  0-based) or per iteration (``by_epoch: false``):

  - ``step``: ``base_lr * gamma ** (number of milestones in step <= progress)`` (``gamma`` 0.1;
    an int ``step`` means every ``step``), never below ``min_lr``;
  - ``CosineAnnealing``: from ``base_lr`` to ``min_lr`` (or ``base_lr * min_lr_ratio``) over the run;
  - ``poly``: ``(base_lr - min_lr) * (1 - progress / max_progress) ** power + min_lr``;
  - ``fixed``: ``base_lr``;
  - ``YOLOX`` (mmcv ``YOLOXLrUpdaterHook``, per iteration, ``by_epoch: false``): with ``p = iter + 1``,
    ``W`` the warmup length and ``L = num_last_epochs * iters_per_epoch``, cosine from ``base_lr``
    to ``min_lr`` (or ``base_lr * min_lr_ratio``) at ``(p - W) / (max_iters - W - L)``, then the end
    value for ``p >= max_iters - L``. Its ``exp`` warmup is
    ``base_lr * warmup_ratio * ((iter + 1) / W) ** 2``.

  - ``Cyclic`` (mmcv ``CyclicLrUpdaterHook``, per iteration): the run is split into ``cyclic_times``
    cycles of ``C = max_iters // cyclic_times`` iterations; in each, the lr goes from ``base_lr`` to
    ``base_lr * target_ratio[0]`` over the first ``int(step_ratio_up * C)`` iterations, then to
    ``base_lr * target_ratio[1]`` (``anneal_strategy`` ``cos`` or ``linear``). With ``gamma < 1`` the
    peak of cycle ``k`` shrinks to ``1 - gamma**k + target_ratio[0] * gamma**k``. A single ratio ``r``
    means ``(r, r / 1e5)``;
  - ``OneCycle`` (mmcv ``OneCycleLrUpdaterHook`` = ``torch.optim.lr_scheduler.OneCycleLR``, per
    iteration): the base lr is ``max_lr / div_factor`` (``optimizer.lr`` is not used), annealed up to
    ``max_lr`` until iteration ``pct_start * total_steps - 1``, then down to
    ``base / final_div_factor`` at ``total_steps - 1`` (``three_phase``: up, back down to the base
    at ``2 * pct_start * total_steps - 2``, then to the minimum). ``total_steps`` defaults to the run's
    iterations and may not be fewer;
  - ``CosineRestart`` (mmcv ``CosineRestartLrUpdaterHook``): cosine cycles of ``periods`` epochs
    (iterations with ``by_epoch: false``), cycle ``k`` starting at
    ``min + restart_weights[k] * (base_lr - min)`` and ending at ``min_lr`` (or
    ``base_lr * min_lr_ratio``); the periods must cover the run.

- *Warmup* is per iteration over the first ``warmup_iters`` iterations (``warmup_by_epoch``:
  epochs instead), applied to the regular lr:

  - ``linear``: ``regular * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio))``;
  - ``exp``: ``regular * warmup_ratio ** (1 - i / warmup_iters)``;
  - ``constant``: ``regular * warmup_ratio``.

``momentum_config`` (:class:`MomentumSchedule`) cycles the optimizer's momentum (``betas[0]`` for
Adam-type optimizers) in step with ``Cyclic``/``OneCycle`` lr schedules, mmcv semantics:
``{policy: cyclic, target_ratio: [0.8947, 1], cyclic_times: 1, step_ratio_up: 0.4}`` or
``{policy: OneCycle, base_momentum: 0.85, max_momentum: 0.95, pct_start: 0.3}``.

Example (base lr 0.02, 100 iterations per epoch):
    >>> s = LrSchedule("step", max_progress=12, step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    >>> round(s.factor(epoch=0, iter=0, iters_per_epoch=100), 6)
    0.001
    >>> s.factor(epoch=8, iter=800, iters_per_epoch=100)
    0.1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from detcli.errors import ConfigError, did_you_mean

POLICIES: dict[str, frozenset[str]] = {
    "step": frozenset({"step", "gamma", "min_lr"}),
    "CosineAnnealing": frozenset({"min_lr", "min_lr_ratio"}),
    "poly": frozenset({"power", "min_lr"}),
    "fixed": frozenset(),
    "YOLOX": frozenset({"num_last_epochs", "min_lr", "min_lr_ratio"}),
    "Cyclic": frozenset({"target_ratio", "cyclic_times", "step_ratio_up", "anneal_strategy", "gamma"}),
    "OneCycle": frozenset({"max_lr", "total_steps", "pct_start", "anneal_strategy", "div_factor",
                           "final_div_factor", "three_phase"}),
    "CosineRestart": frozenset({"periods", "restart_weights", "min_lr", "min_lr_ratio"}),
}
#: Policies that change the lr per iteration only (mmcv refuses ``by_epoch: true`` for them).
ITERATION_POLICIES = ("YOLOX", "Cyclic", "OneCycle")
ANNEAL_STRATEGIES = ("cos", "linear")
WARMUPS = ("linear", "exp", "constant")
COMMON_KEYS = frozenset({"policy", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch"})


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from ``weight * start + (1 - weight) * end`` (factor 0) to ``end`` (factor 1)."""
    return end + 0.5 * weight * (start - end) * (math.cos(math.pi * factor) + 1)


def annealing_linear(start: float, end: float, factor: float) -> float:
    """Straight line from ``start`` (factor 0) to ``end`` (factor 1)."""
    return start + (end - start) * factor


def _anneal(strategy: str, key: str) -> Any:
    if strategy not in ANNEAL_STRATEGIES:
        raise ConfigError(f"{key}.anneal_strategy: must be 'cos' or 'linear', got {strategy!r}")
    return annealing_cos if strategy == "cos" else annealing_linear


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ratio_pair(value: Any, key: str) -> tuple[float, float]:
    """mmcv's ``target_ratio``: ``r`` or ``[r]`` means ``(r, r / 1e5)``; else two numbers."""
    if _is_num(value):
        return float(value), float(value) / 1e5
    if isinstance(value, (list, tuple)) and len(value) in (1, 2) and all(_is_num(v) for v in value):
        return (float(value[0]), float(value[0]) / 1e5) if len(value) == 1 else (float(value[0]), float(value[1]))
    raise ConfigError(f"{key}.target_ratio: expected a number or [high, low], got {value!r}")


def _per_group(value: Any, n_groups: int, key: str) -> list[float]:
    """A number for every parameter group, or one number each (mmcv's ``format_param``)."""
    if _is_num(value):
        return [float(value)] * n_groups
    if isinstance(value, (list, tuple)) and all(_is_num(v) for v in value):
        if len(value) != n_groups:
            raise ConfigError(f"{key}: {len(value)} values for {n_groups} parameter groups")
        return [float(v) for v in value]
    raise ConfigError(f"{key}: expected a number or one number per parameter group, got {value!r}")


def _cycle_phase(iter: int, run_iters: int, cyclic_times: int, step_ratio_up: float, high: float, low: float,
                 gamma: float) -> tuple[float, float, float]:
    """``(start ratio, end ratio, fraction)`` of mmcv's cyclic schedules at 0-based ``iter``."""
    per_cycle = max(1, run_iters // cyclic_times)
    up = int(step_ratio_up * per_cycle)
    pos, cycle = iter % per_cycle, iter // per_cycle
    scale = gamma**cycle
    if pos < up:
        return 1.0, 1 - scale + high * scale, pos / up
    return 1 - scale + high * scale, low, (pos - up) / (per_cycle - up)


def _one_cycle_phases(total: float, pct_start: float, three_phase: bool, high: Any, low: Any, end: Any) -> list[tuple[float, Any, Any]]:
    if three_phase:
        return [(pct_start * total - 1, low, high), (2 * pct_start * total - 2, high, low), (total - 1, low, end)]
    return [(pct_start * total - 1, low, high), (total - 1, high, end)]


def _walk_phases(iter: int, phases: Sequence[tuple[float, float, float]], anneal: Any) -> float:
    """Value at ``iter`` of consecutive phases ``(end_iter, start, end)`` starting at 0 (the last one extends)."""
    start_iter = 0.0
    for i, (end_iter, a, b) in enumerate(phases):
        if iter <= end_iter or i == len(phases) - 1:
            span = end_iter - start_iter
            return anneal(a, b, (iter - start_iter) / span if span else 1.0)
        start_iter = end_iter
    raise AssertionError("unreachable")


class LrSchedule:
    """A learning-rate multiplier as a function of the training position.

    Args:
        policy: ``step``, ``CosineAnnealing``, ``poly``, ``fixed``, ``YOLOX``, ``Cyclic``, ``OneCycle`` or
            ``CosineRestart`` (case-insensitive; ``Cosine`` is ``CosineAnnealing``).
        max_progress: the run's length in the schedule's unit (epochs if ``by_epoch`` else iterations).
        by_epoch: the regular lr changes per epoch (True) or per iteration (False).
        warmup: ``linear``, ``exp``, ``constant`` or None.
        warmup_iters: warmup length in iterations (epochs with ``warmup_by_epoch``).
        warmup_ratio: lr multiplier at the start of warmup.
        warmup_by_epoch: measure ``warmup_iters`` in epochs.
        step: ``step`` policy milestones (list) or period (int).
        gamma: ``step`` policy decay (default 0.1); ``Cyclic``: the peak's decay per cycle (default 1).
        min_lr: lower bound (``step``), end value (``CosineAnnealing``, ``poly``, ``CosineRestart``); absolute.
        min_lr_ratio: ``CosineAnnealing``/``CosineRestart`` end value relative to the base lr.
        power: ``poly`` exponent.
        num_last_epochs: ``YOLOX``: epochs at the end held at the final lr.
        max_epochs: the run's length in epochs (an epoch-based run; iteration policies multiply it by
            the epoch length), None for iteration-based runs.
        target_ratio, cyclic_times, step_ratio_up: ``Cyclic``.
        anneal_strategy: ``Cyclic``/``OneCycle``: ``cos`` or ``linear``.
        max_lr, total_steps, pct_start, div_factor, final_div_factor, three_phase: ``OneCycle``.
        periods, restart_weights: ``CosineRestart``.
    """

    def __init__(
        self,
        policy: str,
        max_progress: int,
        *,
        by_epoch: bool = True,
        warmup: str | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.1,
        warmup_by_epoch: bool = False,
        step: int | Sequence[int] | None = None,
        gamma: float | None = None,
        min_lr: float | None = None,
        min_lr_ratio: float | None = None,
        power: float = 1.0,
        num_last_epochs: int = 15,
        max_epochs: int | None = None,
        target_ratio: float | Sequence[float] = (10, 1e-4),
        cyclic_times: int = 1,
        step_ratio_up: float = 0.4,
        anneal_strategy: str = "cos",
        max_lr: float | Sequence[float] | None = None,
        total_steps: int | None = None,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        periods: Sequence[int] | None = None,
        restart_weights: Sequence[float] = (1.0,),
    ) -> None:
        canonical = {p.lower(): p for p in POLICIES} | {"cosine": "CosineAnnealing"}
        if policy.lower() not in canonical:
            raise ConfigError(
                f"lr_config.policy: unknown policy '{policy}'{did_you_mean(policy, POLICIES)} "
                f"(known: {', '.join(POLICIES)})"
            )
        self.policy = canonical[policy.lower()]
        if warmup is not None and warmup not in WARMUPS:
            raise ConfigError(
                f"lr_config.warmup: unknown warmup '{warmup}'{did_you_mean(warmup, WARMUPS)} (known: {', '.join(WARMUPS)})"
            )
        if warmup is not None and not 0 < warmup_ratio <= 1:
            raise ConfigError(f"lr_config.warmup_ratio must be in (0, 1], got {warmup_ratio}")
        if self.policy == "step" and step is None:
            raise ConfigError("lr_config.step: the step policy needs 'step' (e.g. step: [8, 11])")
        if self.policy in ("CosineAnnealing", "YOLOX", "CosineRestart") and (min_lr is None) == (min_lr_ratio is None):
            raise ConfigError(f"lr_config: {self.policy} needs exactly one of 'min_lr' and 'min_lr_ratio'")
        if self.policy in ITERATION_POLICIES and by_epoch:
            raise ConfigError(f"lr_config.by_epoch: the {self.policy} policy is per iteration; set by_epoch: false")
        if isinstance(num_last_epochs, bool) or not isinstance(num_last_epochs, int) or num_last_epochs < 0:
            raise ConfigError(f"lr_config.num_last_epochs must be an integer >= 0, got {num_last_epochs!r}")
        self.num_last_epochs = int(num_last_epochs)
        self.max_epochs = max_epochs
        self.max_progress = max(1, int(max_progress))
        self.by_epoch = by_epoch
        self.warmup = warmup
        self.warmup_iters = int(warmup_iters) if warmup is not None else 0
        self.warmup_ratio = float(warmup_ratio)
        self.warmup_by_epoch = warmup_by_epoch
        self.step = step
        self.gamma = float(gamma if gamma is not None else (1.0 if self.policy == "Cyclic" else 0.1))
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        self.power = float(power)
        self.anneal_strategy = anneal_strategy
        self._anneal = _anneal(anneal_strategy, "lr_config")
        # Cyclic
        self.target_ratio = _ratio_pair(target_ratio, "lr_config")
        if isinstance(cyclic_times, bool) or not isinstance(cyclic_times, int) or cyclic_times < 1:
            raise ConfigError(f"lr_config.cyclic_times: expected an integer >= 1, got {cyclic_times!r}")
        if not _is_num(step_ratio_up) or not 0 <= step_ratio_up < 1:
            raise ConfigError(f"lr_config.step_ratio_up: must be in [0, 1), got {step_ratio_up!r}")
        if self.policy == "Cyclic" and not 0 < self.gamma <= 1:
            raise ConfigError(f"lr_config.gamma: the Cyclic policy's gamma must be in (0, 1], got {gamma}")
        self.cyclic_times = cyclic_times
        self.step_ratio_up = float(step_ratio_up)
        # OneCycle
        if self.policy == "OneCycle" and max_lr is None:
            raise ConfigError("lr_config.max_lr: the OneCycle policy needs max_lr (a number, or one per parameter group)")
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1):
            raise ConfigError(f"lr_config.total_steps: expected a positive integer, got {total_steps!r}")
        if not _is_num(pct_start) or not 0 <= pct_start <= 1:
            raise ConfigError(f"lr_config.pct_start: expected a number in [0, 1], got {pct_start!r}")
        for key, v in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not _is_num(v) or v <= 0:
                raise ConfigError(f"lr_config.{key}: expected a positive number, got {v!r}")
        self.max_lr = list(max_lr) if isinstance(max_lr, (list, tuple)) else max_lr
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.three_phase = bool(three_phase)
        # CosineRestart
        if self.policy == "CosineRestart":
            if (not isinstance(periods, (list, tuple)) or not periods
                    or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in periods)):
                raise ConfigError(f"lr_config.periods: the CosineRestart policy needs periods as positive integers "
                                  f"(e.g. periods: [4, 8]), got {periods!r}")
            if (not isinstance(restart_weights, (list, tuple)) or len(restart_weights) != len(periods)
                    or not all(_is_num(w) for w in restart_weights)):
                raise ConfigError(f"lr_config.restart_weights: one number per period ({len(periods)}), got {restart_weights!r}")
        self.periods = [int(p) for p in periods] if periods else None
        self.restart_weights = [float(w) for w in restart_weights]
        if self.periods is not None:
            self.check_run(self.max_progress if not (self.max_epochs and not by_epoch) else None)

    @classmethod
    def from_config(cls, lr_config: Mapping[str, Any] | None, *, max_epochs: int | None, max_iters: int | None) -> "LrSchedule":
        """Build from an ``lr_config`` section (None: a fixed lr) for a run of ``max_epochs`` or ``max_iters``."""
        cfg = dict(lr_config or {"policy": "fixed"})
        policy = str(cfg.pop("policy", "fixed"))
        canonical = {p.lower(): p for p in POLICIES} | {"cosine": "CosineAnnealing"}
        if policy.lower() not in canonical:
            raise ConfigError(
                f"lr_config.policy: unknown policy '{policy}'{did_you_mean(policy, POLICIES)} "
                f"(known: {', '.join(POLICIES)})"
            )
        name = canonical[policy.lower()]
        allowed = COMMON_KEYS | POLICIES[name]
        cfg.pop("by_epoch", None)
        default_by_epoch = name not in ("Cyclic", "OneCycle")  # mmcv's defaults (YOLOX: must be set false)
        by_epoch = bool((lr_config or {}).get("by_epoch", default_by_epoch))
        for key in cfg:
            if key not in allowed:
                raise ConfigError(
                    f"lr_config.{key}: not an option of the '{policy}' policy{did_you_mean(key, allowed)} "
                    f"(valid: {', '.join(sorted(allowed - {'policy'}))})"
                )
        if by_epoch and max_epochs is None and max_iters is not None:
            by_epoch = False  # an iteration-based run has no epoch count to schedule over
        max_progress = (max_epochs if by_epoch else max_iters) or 1
        return cls(policy, max_progress, by_epoch=by_epoch, max_epochs=max_epochs, **cfg)

    # ------------------------------------------------------------------ positions
    def run_iters(self, iters_per_epoch: int) -> int:
        """The run's length in iterations (an epoch-based run: ``max_epochs * iters_per_epoch``)."""
        return self.max_epochs * iters_per_epoch if self.max_epochs else self.max_progress

    def _span(self, iters_per_epoch: int | None) -> int:
        """The run's length in the schedule's unit."""
        if self.by_epoch or not self.max_epochs or iters_per_epoch is None:
            return self.max_progress
        return self.max_epochs * iters_per_epoch

    def check_run(self, max_iters: int | None) -> None:
        """Check what can only be checked once the run's length in iterations is known.

        Raises:
            ConfigError: ``OneCycle.total_steps`` below the run's iterations, ``CosineRestart.periods``
                shorter than the run, or more ``Cyclic`` cycles than iterations.
        """
        length = self.max_progress if self.by_epoch else max_iters
        if length is None:
            return
        if self.policy == "OneCycle" and self.total_steps is not None and self.total_steps < length:
            raise ConfigError(f"lr_config.total_steps: {self.total_steps} is fewer than the run's {length} iterations")
        if self.policy == "CosineRestart" and self.periods is not None and sum(self.periods) < length:
            unit = "epochs" if self.by_epoch else "iterations"
            raise ConfigError(f"lr_config.periods: {self.periods} cover {sum(self.periods)} {unit}, the run has "
                              f"{length}; lengthen the periods")
        if self.policy == "Cyclic" and self.cyclic_times > length:
            raise ConfigError(f"lr_config.cyclic_times: {self.cyclic_times} cycles in {length} iterations")

    def initial_lr(self, group_index: int, num_groups: int, lr: float) -> float:
        """The base lr of a parameter group whose configured lr is ``lr`` (``OneCycle``: ``max_lr / div_factor``)."""
        if self.policy != "OneCycle":
            return lr
        return _per_group(self.max_lr, num_groups, "lr_config.max_lr")[group_index] / self.div_factor

    # ------------------------------------------------------------------ values
    def regular_factor(self, progress: int, base_lr: float = 1.0, iters_per_epoch: int | None = None) -> float:
        """The policy's lr at ``progress`` (epoch or iteration) for ``base_lr``."""
        if self.policy == "fixed":
            return base_lr
        if self.policy == "step":
            if isinstance(self.step, int):
                exp = progress // self.step
            else:
                exp = sum(1 for s in self.step or () if progress >= s)
            lr = base_lr * self.gamma**exp
            return max(lr, self.min_lr) if self.min_lr is not None else lr
        target = self.min_lr if self.min_lr is not None else base_lr * float(self.min_lr_ratio or 0.0)
        if self.policy == "CosineAnnealing":
            frac = min(1.0, progress / self._span(iters_per_epoch))
            return annealing_cos(base_lr, target, frac)
        if self.policy == "CosineRestart":
            assert self.periods is not None
            start = 0
            for period, weight in zip(self.periods, self.restart_weights):
                if progress < start + period:
                    return annealing_cos(base_lr, target, min(1.0, (progress - start) / period), weight)
                start += period
            raise ConfigError(f"lr_config.periods: {self.periods} do not reach position {progress}")
        if self.policy == "Cyclic":
            run = self.run_iters(iters_per_epoch or 1)
            a, b, frac = _cycle_phase(progress, run, self.cyclic_times, self.step_ratio_up, *self.target_ratio, self.gamma)
            return self._anneal(base_lr * a, base_lr * b, frac)
        if self.policy == "OneCycle":
            total = self.total_steps or self.run_iters(iters_per_epoch or 1)
            phases = _one_cycle_phases(total, self.pct_start, self.three_phase, base_lr * self.div_factor, base_lr,
                                       base_lr / self.final_div_factor)
            return _walk_phases(progress, phases, self._anneal)
        # poly
        min_lr = self.min_lr or 0.0
        coeff = (1 - min(1.0, progress / self._span(iters_per_epoch))) ** self.power
        return (base_lr - min_lr) * coeff + min_lr

    def lr(self, base_lr: float, *, epoch: int, iter: int, iters_per_epoch: int) -> float:
        """The lr for ``base_lr`` at 0-based ``epoch`` and global iteration ``iter``."""
        if self.policy == "YOLOX":
            return self._yolox_lr(base_lr, iter, iters_per_epoch)
        progress = epoch if self.by_epoch else iter
        regular = self.regular_factor(progress, base_lr, iters_per_epoch)
        warmup_len = self.warmup_iters * (iters_per_epoch if self.warmup_by_epoch else 1)
        if self.warmup is None or iter >= warmup_len:
            return regular
        if self.warmup == "constant":
            return regular * self.warmup_ratio
        if self.warmup == "linear":
            k = (1 - iter / warmup_len) * (1 - self.warmup_ratio)
            return regular * (1 - k)
        return regular * self.warmup_ratio ** (1 - iter / warmup_len)  # exp

    def _yolox_lr(self, base_lr: float, iter: int, iters_per_epoch: int) -> float:
        max_iters = self.run_iters(iters_per_epoch)
        warmup_len = self.warmup_iters * (iters_per_epoch if self.warmup_by_epoch else 1)
        if self.warmup is not None and iter < warmup_len:
            if self.warmup == "exp":
                return base_lr * self.warmup_ratio * ((iter + 1) / warmup_len) ** 2
            if self.warmup == "constant":
                return base_lr * self.warmup_ratio
            return base_lr * (1 - (1 - iter / warmup_len) * (1 - self.warmup_ratio))
        target = self.min_lr if self.min_lr is not None else base_lr * float(self.min_lr_ratio or 0.0)
        last = self.num_last_epochs * iters_per_epoch
        progress = iter + 1
        if progress >= max_iters - last:
            return target
        span = max(1, max_iters - warmup_len - last)
        return target + 0.5 * (base_lr - target) * (math.cos(math.pi * (progress - warmup_len) / span) + 1)

    def factor(self, *, epoch: int, iter: int, iters_per_epoch: int) -> float:
        """``lr / base_lr`` at that position (valid for every policy whose min_lr is relative or absent)."""
        return self.lr(1.0, epoch=epoch, iter=iter, iters_per_epoch=iters_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Plain description of the schedule (saved in checkpoints; the lr itself is recomputed)."""
        out = {
            "policy": self.policy, "max_progress": self.max_progress, "by_epoch": self.by_epoch,
            "warmup": self.warmup, "warmup_iters": self.warmup_iters, "warmup_ratio": self.warmup_ratio,
            "warmup_by_epoch": self.warmup_by_epoch,
            "step": list(self.step) if isinstance(self.step, (list, tuple)) else self.step,
            "gamma": self.gamma, "min_lr": self.min_lr, "min_lr_ratio": self.min_lr_ratio, "power": self.power,
            "max_epochs": self.max_epochs,
        }
        if self.policy == "YOLOX":
            out["num_last_epochs"] = self.num_last_epochs
        if self.policy == "Cyclic":
            out |= {"target_ratio": list(self.target_ratio), "cyclic_times": self.cyclic_times,
                    "step_ratio_up": self.step_ratio_up, "anneal_strategy": self.anneal_strategy}
        if self.policy == "OneCycle":
            out |= {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                    "anneal_strategy": self.anneal_strategy, "div_factor": self.div_factor,
                    "final_div_factor": self.final_div_factor, "three_phase": self.three_phase}
        if self.policy == "CosineRestart":
            out |= {"periods": self.periods, "restart_weights": self.restart_weights}
        return out


MOMENTUM_POLICIES: dict[str, frozenset[str]] = {
    "Cyclic": frozenset({"target_ratio", "cyclic_times", "step_ratio_up", "anneal_strategy", "gamma"}),
    "OneCycle": frozenset({"base_momentum", "max_momentum", "pct_start", "anneal_strategy", "three_phase"}),
}
MOMENTUM_COMMON_KEYS = frozenset({"policy", "by_epoch", "warmup", "warmup_iters", "warmup_ratio"})


class MomentumSchedule:
    """The optimizer's momentum (``betas[0]`` of Adam-type optimizers) per iteration, mmcv semantics.

    - ``Cyclic`` (``policy: cyclic``; mmcv ``CyclicMomentumUpdaterHook``): the same cycles as the
      ``Cyclic`` lr policy, applied to the group's initial momentum, with ``target_ratio`` default
      ``(0.85 / 0.95, 1)`` (momentum dips while the lr peaks) and ``gamma`` default 1;
    - ``OneCycle`` (mmcv ``OneCycleMomentumUpdaterHook``): from ``max_momentum`` down to
      ``base_momentum`` until iteration ``pct_start * max_iters - 1``, then back up to
      ``max_momentum`` at ``max_iters - 1`` (``three_phase``: down, up, then flat), as
      ``torch.optim.lr_scheduler.OneCycleLR(cycle_momentum=True)``; numbers or one per parameter group.

    Warmup (``warmup``/``warmup_iters``/``warmup_ratio``, default ratio 0.9) divides the momentum as
    mmcv's ``MomentumUpdaterHook`` does: ``linear``: ``regular / (1 - (1 - i / W) * (1 - ratio))``.
    Both policies are per iteration (``by_epoch: true`` is refused, as mmcv).
    """

    def __init__(
        self,
        policy: str,
        max_iters: int | None,
        *,
        max_epochs: int | None = None,
        by_epoch: bool = False,
        warmup: str | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.9,
        target_ratio: float | Sequence[float] = (0.85 / 0.95, 1.0),
        cyclic_times: int = 1,
        step_ratio_up: float = 0.4,
        anneal_strategy: str = "cos",
        gamma: float = 1.0,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        pct_start: float = 0.3,
        three_phase: bool = False,
    ) -> None:
        names = {"cyclic": "Cyclic", "cyclicmomentum": "Cyclic", "onecycle": "OneCycle", "onecyclemomentum": "OneCycle"}
        if str(policy).lower() not in names:
            raise ConfigError(f"momentum_config.policy: unknown policy '{policy}'{did_you_mean(policy, MOMENTUM_POLICIES)} "
                              f"(known: cyclic, OneCycle)")
        self.policy = names[str(policy).lower()]
        if by_epoch:
            raise ConfigError(f"momentum_config.by_epoch: the {self.policy} momentum policy is per iteration; "
                              "set by_epoch: false")
        if warmup is not None and warmup not in WARMUPS:
            raise ConfigError(f"momentum_config.warmup: unknown warmup '{warmup}' (known: {', '.join(WARMUPS)})")
        if warmup is not None and (not _is_num(warmup_ratio) or not 0 < warmup_ratio <= 1):
            raise ConfigError(f"momentum_config.warmup_ratio must be in (0, 1], got {warmup_ratio!r}")
        if warmup is not None and (isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) or warmup_iters < 1):
            raise ConfigError(f"momentum_config.warmup_iters: expected a positive integer, got {warmup_iters!r}")
        if isinstance(cyclic_times, bool) or not isinstance(cyclic_times, int) or cyclic_times < 1:
            raise ConfigError(f"momentum_config.cyclic_times: expected an integer >= 1, got {cyclic_times!r}")
        if not _is_num(step_ratio_up) or not 0 <= step_ratio_up < 1:
            raise ConfigError(f"momentum_config.step_ratio_up: must be in [0, 1), got {step_ratio_up!r}")
        if not _is_num(pct_start) or not 0 <= pct_start <= 1:
            raise ConfigError(f"momentum_config.pct_start: expected a number in [0, 1], got {pct_start!r}")
        if not _is_num(gamma) or not 0 < gamma <= 1:
            raise ConfigError(f"momentum_config.gamma: must be in (0, 1], got {gamma!r}")
        self.max_iters = max_iters
        self.max_epochs = max_epochs
        self.warmup = warmup
        self.warmup_iters = int(warmup_iters) if warmup is not None else 0
        self.warmup_ratio = float(warmup_ratio)
        self.target_ratio = _ratio_pair(target_ratio, "momentum_config")
        self.cyclic_times = cyclic_times
        self.step_ratio_up = float(step_ratio_up)
        self.anneal_strategy = anneal_strategy
        self._anneal = _anneal(anneal_strategy, "momentum_config")
        self.gamma = float(gamma)
        self.base_momentum = list(base_momentum) if isinstance(base_momentum, (list, tuple)) else base_momentum
        self.max_momentum = list(max_momentum) if isinstance(max_momentum, (list, tuple)) else max_momentum
        _per_group(self.base_momentum, 1 if _is_num(self.base_momentum) else len(self.base_momentum),  # type: ignore[arg-type]
                   "momentum_config.base_momentum")
        _per_group(self.max_momentum, 1 if _is_num(self.max_momentum) else len(self.max_momentum),  # type: ignore[arg-type]
                   "momentum_config.max_momentum")
        self.pct_start = float(pct_start)
        self.three_phase = bool(three_phase)

    @classmethod
    def from_config(cls, momentum_config: Mapping[str, Any] | None, *, max_epochs: int | None,
                    max_iters: int | None) -> "MomentumSchedule | None":
        """Build from a ``momentum_config`` section; None when there is none."""
        if momentum_config is None:
            return None
        if not isinstance(momentum_config, Mapping):
            raise ConfigError(f"momentum_config: expected a mapping such as {{policy: cyclic}}, got {momentum_config!r}")
        cfg = dict(momentum_config)
        if "policy" not in cfg:
            raise ConfigError("momentum_config.policy: missing (cyclic or OneCycle)")
        policy = str(cfg.pop("policy"))
        kind = {"cyclic": "Cyclic", "cyclicmomentum": "Cyclic", "onecycle": "OneCycle"}.get(policy.lower())
        allowed = MOMENTUM_COMMON_KEYS | MOMENTUM_POLICIES.get(kind or "", frozenset())
        for key in cfg:
            if kind is not None and key not in allowed:
                raise ConfigError(f"momentum_config.{key}: not an option of the '{policy}' momentum policy"
                                  f"{did_you_mean(key, allowed)} (valid: {', '.join(sorted(allowed - {'policy'}))})")
        return cls(policy, max_iters, max_epochs=max_epochs, **cfg)

    def run_iters(self, iters_per_epoch: int) -> int:
        return self.max_epochs * iters_per_epoch if self.max_epochs else int(self.max_iters or 1)

    def group_bounds(self, group_index: int, num_groups: int) -> tuple[float, float]:
        """``OneCycle``: ``(base_momentum, max_momentum)`` of a parameter group."""
        return (_per_group(self.base_momentum, num_groups, "momentum_config.base_momentum")[group_index],
                _per_group(self.max_momentum, num_groups, "momentum_config.max_momentum")[group_index])

    def momentum(self, initial: float, *, iter: int, iters_per_epoch: int,
                 bounds: tuple[float, float] | None = None) -> float:
        """The momentum at 0-based ``iter`` for a group with initial momentum ``initial`` (``Cyclic``) or
        ``bounds = (base_momentum, max_momentum)`` (``OneCycle``)."""
        run = self.run_iters(iters_per_epoch)
        if self.policy == "Cyclic":
            a, b, frac = _cycle_phase(iter, run, self.cyclic_times, self.step_ratio_up, *self.target_ratio, self.gamma)
            regular = self._anneal(initial * a, initial * b, frac)
        else:
            low, high = bounds if bounds is not None else (float(self.base_momentum), float(self.max_momentum))  # type: ignore[arg-type]
            if self.three_phase:
                phases = [(self.pct_start * run - 1, high, low), (2 * self.pct_start * run - 2, low, high),
                          (run - 1, high, high)]
            else:
                phases = [(self.pct_start * run - 1, high, low), (run - 1, low, high)]
            regular = _walk_phases(iter, phases, self._anneal)
        if self.warmup is None or iter >= self.warmup_iters:
            return regular
        if self.warmup == "constant":
            return regular / self.warmup_ratio
        if self.warmup == "linear":
            return regular / (1 - (1 - iter / self.warmup_iters) * (1 - self.warmup_ratio))
        return regular / self.warmup_ratio ** (1 - iter / self.warmup_iters)

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "max_iters": self.max_iters, "max_epochs": self.max_epochs, "warmup": self.warmup,
            "warmup_iters": self.warmup_iters, "warmup_ratio": self.warmup_ratio,
            "target_ratio": list(self.target_ratio), "cyclic_times": self.cyclic_times,
            "step_ratio_up": self.step_ratio_up, "anneal_strategy": self.anneal_strategy, "gamma": self.gamma,
            "base_momentum": self.base_momentum, "max_momentum": self.max_momentum, "pct_start": self.pct_start,
            "three_phase": self.three_phase,
        }
