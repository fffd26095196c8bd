"""Typed errors raised by the det library.

The library never prints or exits: it raises one of these, chaining the cause with
``raise ... from e``. Only :mod:`detcli.cli` turns them into one red line and exit code 1.
Every message names the offending file, key or index and, where one exists, a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DetError(Exception):
    """Base class of every error det raises on purpose."""


class ConfigError(DetError):
    """A preset, an override or a ``{type: ...}`` node is invalid."""


class RegistryError(ConfigError, ValueError):
    """A component name registered twice, or something that is not a class or function registered."""


class PluginError(ConfigError):
    """A ``custom_imports`` module or a ``det.plugins`` entry point failed to import."""


class DatasetError(DetError):
    """A dataset, an annotation file or an image is invalid or missing."""


class CheckpointError(DetError):
    """A file is not a det checkpoint, or does not fit the model."""


class KernelError(DetError):
    """A compute backend (CuPy kernels, CUDA) was requested where it cannot work, or an op was given
    inputs no kernel may run on (e.g. a RoI outside the batch or with NaN coordinates)."""


class TrainingError(DetError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class OutputError(DetError):
    """An output path (work dir, out dir, results file) cannot be written, the disk is full, or another
    det run holds it."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" — did you mean 'X'?"`` for the closest candidate, or ``""`` when none is close.

    Example:
        >>> did_you_mean("RetinaHaed", ["RetinaHead", "FCOSHead"])
        " — did you mean 'RetinaHead'?"
    """
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" — did you mean '{matches[0]}'?" if matches else ""
