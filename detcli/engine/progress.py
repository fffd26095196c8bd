"""Progress events the engine emits while it works; the CLI renders them (a rich bar on a terminal).

The engine never prints. It calls ``progress(event)`` (any callable taking a
:class:`ProgressEvent`) once per iteration of training, validation and testing, and logs plain
periodic lines through :mod:`logging` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ProgressEvent:
    """Where a run is.

    Attributes:
        phase: ``"train"``, ``"val"`` or ``"test"``.
        epoch: 1-based epoch (0 for test, or an IterBasedRunner's data epoch + 1).
        iter: iterations done in this phase (train: the global iteration count; val/test: images done).
        max: total of ``iter`` for this phase (train: ``max_epochs * iters_per_epoch`` or ``max_iters``).
        losses: latest logged loss averages (train, at the log interval; empty before the first log).
        lr: current learning rate of the first parameter group (train), else None.
        eta: estimated seconds left in the phase, or None before it is known.
        message: an optional one-line status ("saved epoch_3.pth", "bbox_mAP 0.512").
    """

    phase: str
    epoch: int
    iter: int
    max: int
    losses: dict[str, float] = field(default_factory=dict)
    lr: float | None = None
    eta: float | None = None
    message: str | None = None


class ProgressCallback(Protocol):
    """Anything called with a :class:`ProgressEvent`; must be cheap (it runs every iteration)."""

    def __call__(self, event: ProgressEvent) -> None: ...
