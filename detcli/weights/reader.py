"""Read a checkpoint file without running code from it, and say what it is.

``torch.load(weights_only=True)`` reads tensors and plain containers only. Checkpoints written by other tools
often carry more Python objects next to the weights: MMEngine's ``HistoryBuffer`` in ``message_hub``, numpy
scalars in ``meta``, config objects. :func:`safe_torch_load` reads those files too, still through torch's
weights-only unpickler: numpy arrays, scalars and dtypes are rebuilt as numpy values, and every other
class is replaced by an inert placeholder (:class:`Opaque`) whose construction does nothing — the real class is
never imported or called. A file that names a global from a module that can run commands (``os``, ``posix``,
``subprocess``, ``builtins.eval``, ...) is refused outright: that is a pickle payload, not a checkpoint.
"""

from __future__ import annotations

import importlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from detcli.errors import CheckpointError

#: Modules whose globals in a pickle mean a code-execution payload: such files are refused.
DANGEROUS_MODULES: frozenset[str] = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "socket", "importlib", "runpy",
    "code", "codeop", "pty", "pickle", "_pickle", "marshal", "ctypes", "types", "functools", "operator", "webbrowser",
    "io", "_io", "pathlib", "tempfile", "multiprocessing", "asyncio", "signal", "platform", "inspect", "ast",
    "pdb", "timeit", "commands", "popen2", "urllib", "http", "requests", "torch.hub", "shelve", "dill", "cloudpickle",
})

MAX_GLOBALS = 256


class Opaque:
    """Stands in for an object of a class det does not load (``repr`` names the class); holds nothing."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:  # noqa: D102
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<not loaded: {self.qualname}>"


def _numpy_globals() -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for mod_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            with warnings.catch_warnings():  # numpy 2 deprecates the numpy.core alias
                warnings.simplefilter("ignore")
                mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for name in ("scalar", "_reconstruct"):
            if hasattr(mod, name):
                out[f"{mod_name}.{name}"] = getattr(mod, name)
    for name in dir(getattr(np, "dtypes", object())):
        if name.endswith("DType"):
            out[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return out


def is_dangerous(qualname: str) -> bool:
    """True when ``qualname`` (``module.name``) belongs to a module that can run commands or code."""
    parts = qualname.split(".")
    return any(".".join(parts[:i]) in DANGEROUS_MODULES for i in range(1, len(parts)))


def _unsupported_global(text: str) -> str | None:
    if "Unsupported global:" in text:
        return text.split("Unsupported global:", 1)[1].split(" was not", 1)[0].replace("GLOBAL", "").strip()
    if "Trying to load unsupported GLOBAL" in text:
        return text.split("Trying to load unsupported GLOBAL", 1)[1].split(" whose module", 1)[0].strip()
    return None


def _refuse(path: Path, name: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused: loading it would call {name}, a pickle payload that can run commands, not a "
        "checkpoint. det never runs code from weight files; do not use this file"
    )


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """Load a torch file (zip or legacy format) with torch's weights-only unpickler, foreign objects inert.

    Raises:
        CheckpointError: missing file, not a torch file (truncated, another format), or a code-execution payload.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a checkpoint file (pass e.g. {p / 'latest.pth'})")
    zipped = zipfile.is_zipfile(p)
    names: list[str] = []
    if zipped:
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
        except Exception:  # a damaged archive: the load below reports it
            names = []
    allowed = _numpy_globals()
    for _ in range(MAX_GLOBALS):
        for name in names:
            if is_dangerous(name):
                raise _refuse(p, name)
        extra: list[Any] = [v for k, v in allowed.items() if k.startswith("numpy.dtypes.")]  # dtype instances' types
        extra += [
            (allowed[n], n) if n in allowed else (type(n.rsplit(".", 1)[-1], (Opaque,), {"qualname": n}), n)
            for n in names
        ]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.serialization.safe_globals(extra):
                    return torch.load(p, map_location="cpu", weights_only=True, mmap=zipped)
        except pickle.UnpicklingError as e:
            name = _unsupported_global(str(e))  # type: ignore[assignment]
            if name is None:
                detail = _first_line(str(e))
                raise CheckpointError(f"{p}: not a torch checkpoint file (damaged or another format: {detail})") from None
            if is_dangerous(name) or "is blocked" in str(e):
                raise _refuse(p, name) from None
            if name in names:
                raise CheckpointError(f"{p}: cannot be read safely: the object {name} cannot be replaced") from None
            names.append(name)
        except Exception as e:  # random bytes and truncated files fail in many ways
            raise CheckpointError(
                f"{p}: not a torch checkpoint file (truncated, damaged or another format: {type(e).__name__}: "
                f"{_first_line(str(e))[:160]}); download or save it again"
            ) from None
    raise CheckpointError(f"{p}: cannot be read safely: more than {MAX_GLOBALS} foreign object types")


def _first_line(text: str) -> str:
    for marker in ("WeightsUnpickler error:",):
        if marker in text:
            text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


@dataclass(frozen=True)
class CheckpointFile:
    """What :func:`read_checkpoint` found in a file.

    Attributes:
        path: the file.
        source: ``det``, ``mmdet`` (2.x or 3.x), ``torchvision`` (a detection or classification state dict) or
            ``state_dict`` (bare tensors of unknown origin).
        version: human-readable format, e.g. ``MMDetection 2.28.2``, ``MMDetection 3.3.0 (MMEngine)``.
        state_dict: the weights, names as in the file (``module.`` prefixes dropped).
        classes: class names the file declares (det ``meta.classes``, mmdet ``meta.CLASSES`` or
            ``meta.dataset_meta.classes``), or None.
        meta: the file's ``meta`` mapping (empty when none).
        raw: the whole loaded object (det checkpoints: with optimizer, scheduler and RNG state).
    """

    path: Path
    source: str
    version: str
    state_dict: dict[str, torch.Tensor]
    classes: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    raw: Any = None

    def describe(self) -> str:
        return f"{self.path} ({self.version}, {len(self.state_dict)} tensors)"


TORCHVISION_DETECTION_PREFIXES = ("backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.", "head.classification_head.")


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointFile:
    """Read ``path`` safely (:func:`safe_torch_load`) and recognise its format.

    Raises:
        CheckpointError: unreadable, or a file that holds no state dict of tensors.
    """
    p = Path(path)
    obj = safe_torch_load(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: not a checkpoint: the file holds a {type(obj).__name__}, not a dict of weights")
    meta = obj.get("meta")
    meta = dict(meta) if isinstance(meta, Mapping) else {}
    if meta.get("format") == "det-checkpoint":
        sd = _tensors(obj.get("state_dict"), p, "state_dict")
        return CheckpointFile(p, "det", f"det {meta.get('det_version', '?')}", sd,
                              tuple(str(c) for c in meta.get("classes") or ()) or None, meta, obj)
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = _tensors(obj["state_dict"], p, "state_dict")
        mmdet_version = str(meta.get("mmdet_version", ""))
        mmengine = "message_hub" in obj or "mmengine_version" in meta or "dataset_meta" in meta or mmdet_version.startswith("3")
        if mmengine:
            found = meta.get("dataset_meta")
            dataset_meta = found if isinstance(found, Mapping) else {}
            classes = dataset_meta.get("classes") or meta.get("CLASSES")
            version = f"MMDetection {mmdet_version or '3.x'} (MMEngine)"
        elif mmdet_version or "CLASSES" in meta or "mmcv_version" in meta:
            classes = meta.get("CLASSES")
            version = f"MMDetection {mmdet_version or '2.x'}"
        else:
            classes, version = None, "a checkpoint dict without det or MMDetection meta"
        source = "mmdet" if (mmengine or mmdet_version or "CLASSES" in meta or "mmcv_version" in meta) else "state_dict"
        return CheckpointFile(p, source, version, sd, _names(classes), meta, obj)
    if "model" in obj and isinstance(obj["model"], Mapping) and _all_tensors(obj["model"]):
        # torchvision's reference scripts save {"model": state_dict, "optimizer": ..., "args": ...}
        obj = obj["model"]
    if _all_tensors(obj):
        sd = {str(k).removeprefix("module."): v for k, v in obj.items()}
        if any(k.startswith(TORCHVISION_DETECTION_PREFIXES) for k in sd):
            return CheckpointFile(p, "torchvision", "torchvision detection weights", sd, None, {}, obj)
        return CheckpointFile(p, "state_dict", "a bare state dict", sd, None, {}, obj)
    keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
    raise CheckpointError(
        f"{p}: not a checkpoint det can read: no 'state_dict' of tensors (top-level keys: {keys}); det reads its "
        "own checkpoints, MMDetection 2.x/3.x checkpoints and torchvision state dicts"
    )


def _all_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _tensors(sd: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: '{what}' is not a mapping of tensors")
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[str(k).removeprefix("module.")] = v
    if sd and not out:
        raise CheckpointError(f"{path}: '{what}' holds no tensors")
    return out


def _names(classes: Any) -> tuple[str, ...] | None:
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes) and classes:
        return tuple(classes)
    return None


def coco_classes() -> tuple[str, ...]:
    """COCO's 80 detection class names in category-id order (from torchvision's COCO weights metadata)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return tuple(n for n in names if n not in ("__background__", "N/A"))
