"""build_dataset: a ``{type: ...}`` dataset node of the config to a dataset object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detcli.data.base import DetDataset
from detcli.registry import DATASETS, build


def build_dataset(cfg: Mapping[str, Any], test_mode: bool, path: str = "data") -> DetDataset:
    """Build ``cfg`` (e.g. ``cfg["data"]["train"]``) from DATASETS; its ``pipeline`` is built too.

    Args:
        cfg: ``{type: CocoDataset | ShapesDataset, pipeline: [...], ...}``.
        test_mode: passed to the dataset unless ``cfg`` sets ``test_mode`` itself.
        path: the node's key path, used in error messages (``data.train``).

    Raises:
        ConfigError: unknown type or keys (naming ``path``).
        DatasetError: the data itself is invalid.
    """
    return build(cfg, DATASETS, path=path, test_mode=test_mode)
