"""Weights from anywhere: URIs, foreign checkpoint files read safely, and a report of every load.

- :func:`resolve_uri` turns ``PATH``, ``torchvision://NAME``, ``open-mmlab://NAME`` and ``http(s)://URL`` into a
  local file (downloads go once into torch's cache, ``$TORCH_HOME/hub/checkpoints``).
- :func:`read_checkpoint` loads a det, MMDetection 2.x / 3.x (MMEngine) or torchvision file without running any
  code from it and says which it is (:class:`CheckpointFile`).
- :func:`load_weights` copies a state dict into a module and returns a :class:`LoadReport`; a load that leaves
  more than the classification layers random is an error unless partial loads are allowed.
"""

from detcli.weights.reader import CheckpointFile, coco_classes, read_checkpoint, safe_torch_load
from detcli.weights.report import LoadReport, load_weights
from detcli.weights.uri import OPEN_MMLAB_URLS, cache_dir, is_uri, resolve_uri, torchvision_weights_url

__all__ = [
    "OPEN_MMLAB_URLS", "CheckpointFile", "LoadReport", "cache_dir", "coco_classes", "is_uri", "load_weights", "read_checkpoint",
    "resolve_uri", "safe_torch_load", "torchvision_weights_url",
]
