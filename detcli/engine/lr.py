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

- *Warmup* is per iteration over the first ``warmup_iters`` iterations (``warmup_by_epoch``:
  epochs instead), applied to the regular lr:

  - ``linear``: ``regular * (1 - (1 - i / warmup_iters) * (1 - warmup_ratio))``;
  - ``exp``: ``regular * warmup_ratio ** (1 - i / warmup_iters)``;
  - ``constant``: ``regular * warmup_ratio``.

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
}
WARMUPS = ("linear", "exp", "constant")
COMMON_KEYS = frozenset({"policy", "by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch"})


class LrSchedule:
    """A learning-rate multiplier as a function of the training position.

    Args:
        policy: ``step``, ``CosineAnnealing``, ``poly`` or ``fixed`` (``Step``/``Cosine``/``Poly``/``Fixed`` accepted).
        max_progress: the run's length in the schedule's unit (epochs if ``by_epoch`` else iterations).
        by_epoch: the regular lr changes per epoch (True) or per iteration (False).
        warmup: ``linear``, ``exp``, ``constant`` or None.
        warmup_iters: warmup length in iterations (epochs with ``warmup_by_epoch``).
        warmup_ratio: lr multiplier at the start of warmup.
        warmup_by_epoch: measure ``warmup_iters`` in epochs.
        step: ``step`` policy milestones (list) or period (int).
        gamma: ``step`` policy decay.
        min_lr: lower bound (``step``), end value (``CosineAnnealing``, ``poly``); absolute.
        min_lr_ratio: ``CosineAnnealing`` end value relative to the base lr.
        power: ``poly`` exponent.
        num_last_epochs: ``YOLOX``: epochs at the end held at the final lr.
        max_epochs: the run's length in epochs (``YOLOX`` of an epoch-based run), None for iteration-based runs.
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
        gamma: float = 0.1,
        min_lr: float | None = None,
        min_lr_ratio: float | None = None,
        power: float = 1.0,
        num_last_epochs: int = 15,
        max_epochs: int | None = None,
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
        if self.policy in ("CosineAnnealing", "YOLOX") and (min_lr is None) == (min_lr_ratio is None):
            raise ConfigError(f"lr_config: {self.policy} needs exactly one of 'min_lr' and 'min_lr_ratio'")
        if self.policy == "YOLOX" and by_epoch:
            raise ConfigError("lr_config.by_epoch: the YOLOX policy is per iteration; set by_epoch: false")
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
        self.gamma = float(gamma)
        self.min_lr = min_lr
        self.min_lr_ratio = min_lr_ratio
        self.power = float(power)

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
        allowed = COMMON_KEYS | POLICIES[canonical[policy.lower()]]
        cfg.pop("by_epoch", None)
        by_epoch = bool((lr_config or {}).get("by_epoch", True))
        for key in cfg:
            if key not in allowed:
                raise ConfigError(
                    f"lr_config.{key}: not an option of the '{policy}' policy{did_you_mean(key, allowed)} "
                    f"(valid: {', '.join(sorted(allowed - {'policy'}))})"
                )
        if by_epoch and max_epochs is None and max_iters is not None:
            by_epoch = False  # an iteration-based run has no epoch count to schedule over
        max_progress = (max_epochs if by_epoch else max_iters) or 1
        if canonical[policy.lower()] == "YOLOX":
            cfg["max_epochs"] = max_epochs
        return cls(policy, max_progress, by_epoch=by_epoch, **cfg)

    def regular_factor(self, progress: int, base_lr: float = 1.0) -> float:
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
        if self.policy == "CosineAnnealing":
            target = self.min_lr if self.min_lr is not None else base_lr * float(self.min_lr_ratio)
            frac = min(1.0, progress / self.max_progress)
            return target + 0.5 * (base_lr - target) * (math.cos(math.pi * frac) + 1)
        # poly
        min_lr = self.min_lr or 0.0
        coeff = (1 - min(1.0, progress / self.max_progress)) ** self.power
        return (base_lr - min_lr) * coeff + min_lr

    def lr(self, base_lr: float, *, epoch: int, iter: int, iters_per_epoch: int) -> float:
        """The lr for ``base_lr`` at 0-based ``epoch`` and global iteration ``iter``."""
        if self.policy == "YOLOX":
            return self._yolox_lr(base_lr, iter, iters_per_epoch)
        progress = epoch if self.by_epoch else iter
        regular = self.regular_factor(progress, base_lr)
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
        max_iters = self.max_epochs * iters_per_epoch if self.max_epochs else self.max_progress
        warmup_len = self.warmup_iters * (iters_per_epoch if self.warmup_by_epoch else 1)
        if self.warmup is not None and iter < warmup_len:
            if self.warmup == "exp":
                return base_lr * self.warmup_ratio * ((iter + 1) / warmup_len) ** 2
            if self.warmup == "constant":
                return base_lr * self.warmup_ratio
            return base_lr * (1 - (1 - iter / warmup_len) * (1 - self.warmup_ratio))
        target = self.min_lr if self.min_lr is not None else base_lr * float(self.min_lr_ratio)
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
        return {
            "policy": self.policy, "max_progress": self.max_progress, "by_epoch": self.by_epoch,
            "warmup": self.warmup, "warmup_iters": self.warmup_iters, "warmup_ratio": self.warmup_ratio,
            "warmup_by_epoch": self.warmup_by_epoch,
            "step": list(self.step) if isinstance(self.step, (list, tuple)) else self.step,
            "gamma": self.gamma, "min_lr": self.min_lr, "min_lr_ratio": self.min_lr_ratio, "power": self.power,
            **({"num_last_epochs": self.num_last_epochs, "max_epochs": self.max_epochs} if self.policy == "YOLOX" else {}),
        }
