"""Key maps from other projects' checkpoints onto det's modules: the one place for every detector.

A checkpoint written by MMDetection (2.x or 3.x) or torchvision names its tensors after its own
modules. Each source has one module here (``mmdet.py``, ``torchvision.py``) whose functions are
registered per det detector class with :func:`register_key_map`; :func:`convert_state_dict` picks
the function of a model's class (walking its base classes) and returns a state dict with det's names.
A detector added to det gets its maps here, next to the others.

A key map is ``fn(state_dict, model) -> dict[str, Tensor]``: it may rename, reorder rows (label
spaces) or drop entries, and leaves keys it does not know under their own names so that the load
report (:mod:`detcli.models.weight_maps.report`) lists them as unexpected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from torch import Tensor, nn

from detcli.errors import CheckpointError

KeyMap = Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]]

#: Checkpoint sources det reads besides its own format.
SOURCES: tuple[str, ...] = ("mmdet", "torchvision")

_MAPS: dict[tuple[str, str], KeyMap] = {}


def register_key_map(source: str, *detectors: str) -> Callable[[KeyMap], KeyMap]:
    """Register ``fn`` as the ``source`` key map of the det detector classes named ``detectors``."""
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r} (known: {', '.join(SOURCES)})")

    def add(fn: KeyMap) -> KeyMap:
        for name in detectors:
            if (source, name) in _MAPS:
                raise ValueError(f"{source} key map of {name} is already registered")
            _MAPS[(source, name)] = fn
        return fn

    return add


def supported_detectors(source: str) -> list[str]:
    """Names of the det detector classes that have a ``source`` key map."""
    return sorted(name for src, name in _MAPS if src == source)


def convert_state_dict(source: str, model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the tensors of a ``source`` checkpoint onto ``model``'s parameter names.

    Raises:
        CheckpointError: no key map of ``source`` exists for the model's class.
    """
    for cls in type(model).__mro__:
        fn = _MAPS.get((source, cls.__name__))
        if fn is not None:
            return fn(strip_prefix(state_dict, "module."), model)
    known = ", ".join(supported_detectors(source)) or "none"
    raise CheckpointError(
        f"det cannot map {source} checkpoints onto a {type(model).__name__} (maps exist for: {known})"
    )


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` from every key that has it (e.g. ``module.`` of DataParallel checkpoints)."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def rename_keys(state_dict: Mapping[str, Tensor], rules: Sequence[tuple[str, str]]) -> dict[str, Tensor]:
    """Apply regex ``(pattern, replacement)`` rules to every key; the first rule that matches wins."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in compiled:
            new, n = pattern.subn(repl, key, count=1)
            if n:
                break
        out[new] = value
    return out


#: Keys of classification layers (their shape follows the number of classes): the only weights a fine-tuning
#: load may leave random. A new head adds its classifier here.
CLASS_LAYER_PATTERNS: tuple[str, ...] = (
    r"(^|\.)retina_cls\.", r"(^|\.)conv_cls\.", r"\.fc_cls\.", r"\.fc_reg\.", r"\.conv_logits\.",
    r"\.multi_level_conv_cls\.",
)

#: (key fragment, what a file holding it is), most specific first: names the family of a file that does not fit.
FAMILY_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("roi_head.mask_head.", "an MMDetection Mask R-CNN"),
    ("roi_heads.mask_", "a torchvision Mask R-CNN"),
    ("roi_head.bbox_head.", "an MMDetection Faster R-CNN"),
    ("roi_heads.box_", "a torchvision Faster R-CNN"),
    ("bbox_head.multi_level_conv_obj.", "an MMDetection YOLOX"),
    ("bbox_head.conv_centerness.", "an MMDetection FCOS"),
    ("head.regression_head.bbox_ctrness", "a torchvision FCOS"),
    ("bbox_head.retina_cls.", "an MMDetection RetinaNet"),
    ("head.classification_head.", "a torchvision RetinaNet"),
    ("fc.weight", "an ImageNet classification (backbone weights: use model.backbone.init_cfg)"),
)


def describe_checkpoint(state_dict: Mapping[str, Tensor]) -> str:
    """``" (the file looks like a ... checkpoint)"`` from its key names, or ``""``."""
    for fragment, what in FAMILY_SIGNATURES:
        if any(fragment in k for k in state_dict):
            return f" (the file looks like {what} checkpoint)"
    return ""


def select_prefix(state_dict: Mapping[str, Tensor], prefixes: Iterable[str]) -> dict[str, Tensor]:
    """The entries whose key starts with one of ``prefixes``."""
    pre = tuple(prefixes)
    return {k: v for k, v in state_dict.items() if k.startswith(pre)}


from detcli.models.weight_maps import mmdet, torchvision  # noqa: E402,F401  (registers the maps)

__all__ = ["CLASS_LAYER_PATTERNS", "SOURCES", "describe_checkpoint", "KeyMap", "convert_state_dict", "register_key_map", "rename_keys", "select_prefix",
           "strip_prefix", "supported_detectors"]
