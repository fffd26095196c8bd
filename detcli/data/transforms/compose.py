"""Compose: run a list of dict-in/dict-out transforms, and the per-sample random generator."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from detcli.registry import TRANSFORMS, build

#: Key of ``results`` holding the ``numpy.random.Generator`` transforms draw from. The dataset
#: seeds it from ``(seed, epoch, index)``, so augmentations are reproducible whatever the number
#: of DataLoader workers. Custom transforms should draw from :func:`get_rng` too.
RNG_KEY = "rng"


def get_rng(results: Mapping[str, Any]) -> np.random.Generator:
    """Return the sample's generator, or a fresh unseeded one when the caller gave none."""
    rng = results.get(RNG_KEY)
    if rng is None:
        return np.random.default_rng()
    return rng


@TRANSFORMS.register()
class Compose:
    """Apply transforms in order; a transform returning None stops the chain and returns None.

    Args:
        transforms: built callables or ``{type: ...}`` dicts (built from TRANSFORMS).
    """

    def __init__(self, transforms: Sequence[Callable[[dict], Any] | Mapping[str, Any]]) -> None:
        self.transforms: list[Callable[[dict], Any]] = []
        for i, t in enumerate(transforms):
            if isinstance(t, Mapping):
                t = build(t, TRANSFORMS, path=f"pipeline.{i}")
            if not callable(t):
                raise TypeError(f"pipeline.{i}: a transform must be callable or a {{type: ...}} dict, got {t!r}")
            self.transforms.append(t)

    def __call__(self, results: Any) -> Any:
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose({inner}\n)"
