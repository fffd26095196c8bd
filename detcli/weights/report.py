"""Copy a state dict into a module and report what happened: loaded, missing, unexpected, misshaped.

Every load of outside weights goes through :func:`load_weights`. It returns a :class:`LoadReport` (a
table for stderr, a dict for ``--json``) and refuses a load that would leave more than the
classification layers at their random initial values, unless partial loads are allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from detcli.errors import CheckpointError

#: BatchNorm's counter: absent from many foreign files (FrozenBatchNorm, old torch); never used in eval.
COUNTERS = ("num_batches_tracked",)


@dataclass
class LoadReport:
    """The outcome of one :func:`load_weights` call.

    Attributes:
        source: what was loaded (file, URI).
        target: into what (``model``, ``backbone``).
        loaded: module keys filled from the file.
        missing: module keys the file lacks (left at their initial values).
        unexpected: file keys the module has no place for (ignored).
        mismatched: ``"key: file (a, b) vs model (c, d)"`` for keys of another shape (left at their initial values).
        class_layers: the missing/mismatched keys that are classification layers (allowed to stay random).
    """

    source: str
    target: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    class_layers: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every module key was filled and nothing in the file was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def rows(self) -> list[tuple[str, int, str]]:
        """``(status, count, first names)`` rows of the table."""
        def first(names: Sequence[str]) -> str:
            return ", ".join(names[:3]) + (f", ... (+{len(names) - 3})" if len(names) > 3 else "")

        return [
            ("loaded", len(self.loaded), first(self.loaded)),
            ("missing", len(self.missing), first(self.missing)),
            ("unexpected", len(self.unexpected), first(self.unexpected)),
            ("shape mismatch", len(self.mismatched), first(self.mismatched)),
        ]

    def table(self) -> str:
        """A plain-text table, one row per status."""
        lines = [f"weights {self.source} -> {self.target}:"]
        lines += [f"  {status:<15}{count:>6}  {names}" for status, count, names in self.rows()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target, "loaded": len(self.loaded), "missing": self.missing,
            "unexpected": self.unexpected, "shape_mismatch": self.mismatched, "class_layers": self.class_layers,
        }


def load_weights(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    target: str = "model",
    allow_partial: bool = False,
    class_patterns: Iterable[str] = (),
    hint: str = "",
) -> LoadReport:
    """Copy the entries of ``state_dict`` whose names and shapes fit ``module``; report the rest.

    Args:
        module: what to load into.
        state_dict: names already mapped onto ``module``'s.
        source: the file or URI, for messages.
        target: ``model``, ``backbone``, ... for messages.
        allow_partial: load even when more than the classification layers would stay random.
        class_patterns: regexes of keys that may stay random (classification layers, whose shape follows the
            number of classes).
        hint: appended to the error (e.g. what the file looks like).

    Raises:
        CheckpointError: keys other than the classification layers missing or misshaped, without
            ``allow_partial``; nothing is loaded then.
    """
    own = module.state_dict()
    patterns = [re.compile(p) for p in class_patterns]
    report = LoadReport(source, target)
    usable: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
    for key in own:
        if key not in state_dict and not key.endswith(COUNTERS):
            report.missing.append(key)
    report.loaded = list(usable)
    random_keys = report.missing + [m.split(":", 1)[0] for m in report.mismatched]
    report.class_layers = [k for k in random_keys if any(p.search(k) for p in patterns)]
    others = [k for k in random_keys if k not in report.class_layers]
    if others and not allow_partial:
        what = []
        if report.missing:
            what.append(f"{len(report.missing)} missing (e.g. {', '.join(report.missing[:3])})")
        if report.mismatched:
            what.append(f"{len(report.mismatched)} of another shape (e.g. {'; '.join(report.mismatched[:2])})")
        raise CheckpointError(
            f"{source}: the weights do not fit the {target}: {len(usable)} of {len(own)} tensors loaded, "
            f"{', '.join(what)}{hint}. Check that the preset matches the checkpoint, or pass --allow-partial "
            "(init_cfg.strict: false) to start with those layers random"
        )
    # keep the module's own dtype/device; BN counters missing from the file stay as they are
    module.load_state_dict(usable, strict=False)
    return report
