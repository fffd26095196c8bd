"""det checkpoints: what they hold, atomic writing and safe loading.

A checkpoint is a plain dict loadable with ``torch.load(path, weights_only=True)``::

    {
        "meta": {"format": "det-checkpoint", "format_version": 1, "det_version": "0.1.0",
                 "epoch": 3, "iter": 1500, "config": {...resolved preset...},
                 "classes": ["circle", ...], "time": "2026-11-24 12:00:00", "best": {...}},
        "state_dict": {...model weights...},
        "optimizer": {...} | None,
        "scheduler": {...lr schedule description...} | None,
        "rng": {"python": [...], "numpy": {...}, "torch": Tensor, "cuda": [Tensor, ...]},
    }

``epoch`` counts finished epochs, ``iter`` finished iterations. Files are written to a temporary
file in the same folder and moved into place with ``os.replace``, so a crash never leaves a torn
checkpoint. Files are read with :func:`detcli.weights.read_checkpoint` (weights-only unpickler, foreign
objects inert, pickle payloads refused); loading anything but a det checkpoint here raises
:class:`~detcli.errors.CheckpointError` naming the file, what it is and how to use it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detcli.errors import CheckpointError, OutputError
from detcli.fileio import atomic_output, output_error
from detcli.weights import CheckpointFile, read_checkpoint

FORMAT = "det-checkpoint"
FORMAT_VERSION = 1


def get_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch and CUDA as plain containers and tensors."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"], np_state["keys"].numpy().astype(np.uint32), int(np_state["pos"]),
            int(np_state["has_gauss"]), float(np_state["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else a copy), replacing ``dst`` atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        err = output_error(dst, e)
        if err is None:
            raise
        raise OutputError(f"{err} (the previous {dst.name} is unchanged)") from e


def make_checkpoint(
    model: nn.Module,
    *,
    epoch: int,
    iter: int,
    config: Mapping[str, Any],
    classes: list[str] | tuple[str, ...],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Mapping[str, Any] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a checkpoint dict (see the module docstring) from the current training state."""
    from detcli import __version__

    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "det_version": __version__,
        "epoch": int(epoch),
        "iter": int(iter),
        "config": dict(config),
        "classes": [str(c) for c in classes],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if extra_meta:
        meta.update(extra_meta)
    return {
        "meta": meta,
        "state_dict": {k: v.detach() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": dict(scheduler) if scheduler is not None else None,
        "rng": get_rng_state(),
    }


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a det checkpoint (read safely: no code from the file runs).

    Raises:
        CheckpointError: the file is missing, unreadable, not a torch file, a pickle payload, or not a det
            checkpoint (an MMDetection or torchvision file gets the commands that use it); the message names the file.
    """
    p = Path(path)
    ckpt = read_checkpoint(p)
    if ckpt.source != "det":
        raise not_det_error(ckpt)
    check_checkpoint(ckpt.raw, p)
    obj = ckpt.raw
    if str(map_location) != "cpu":
        obj = dict(obj, state_dict={k: v.to(map_location) for k, v in obj["state_dict"].items()})
    return obj


def not_det_error(ckpt: CheckpointFile) -> CheckpointError:
    """The error for a foreign file where a det checkpoint (with its config) is needed, with the ways to use it."""
    p = ckpt.path
    if ckpt.source in ("mmdet", "torchvision"):
        return CheckpointError(
            f"{p}: {ckpt.version}, not a det checkpoint, so it carries no det config: use it with a preset "
            f"(`det test PRESET {p}`, `det infer {p} IMG --config PRESET`, `--load-from {p}`) or convert it once "
            f"(`det convert-checkpoint {ckpt.source} {p} OUT.pth --preset PRESET`)"
        )
    return CheckpointError(
        f"{p}: not a det checkpoint: {ckpt.version} ({len(ckpt.state_dict)} tensors, no det meta with config and "
        f"classes). For backbone weights use model.backbone.init_cfg={{type: Pretrained, checkpoint: {p}}}; for "
        "a whole detector's weights use --load-from with a preset"
    )


def check_checkpoint(obj: Any, path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``obj`` has the structure of a det checkpoint."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a det checkpoint: the file holds a {type(obj).__name__}, not a dict")
    meta = obj.get("meta")
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT or not isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not a det checkpoint: meta.format is not '{FORMAT}'")
    for key in ("epoch", "iter", "config", "classes"):
        if key not in meta:
            raise CheckpointError(f"{path}: damaged det checkpoint: meta has no '{key}'")


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Load ``state_dict`` into ``model`` exactly; any missing, unexpected or misshaped key is an error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if misshaped:
            parts.append(f"shape mismatch {len(misshaped)} (e.g. {'; '.join(misshaped[:3])})")
        raise CheckpointError(
            f"{path}: the weights do not fit the model: {', '.join(parts)}. Does the config match the checkpoint "
            "(omit --config/PRESET to use the config stored in the checkpoint)?"
        )
    model.load_state_dict(state_dict, strict=True)


@contextlib.contextmanager
def preserved_rng() -> Any:
    """Run a block (e.g. validation) without disturbing the RNG streams training continues with."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
