"""build_dataset: a ``{type: ...}`` dataset node of the config to a dataset object.

Besides single datasets it builds mmdet 2.x's three ways of combining them:

- wrappers (``RepeatDataset``, ``ClassBalancedDataset``, ``ConcatDataset``, ``MultiImageMixDataset``): their ``dataset(s)``
  are built first, with the same ``test_mode``;
- a list of dataset nodes (``data.train: [A, B]``): a ``ConcatDataset`` of them;
- a node whose ``ann_file`` is a list (``img_prefix`` a list of the same length, or one prefix for
  all; ``separate_eval`` optional): one dataset per annotation file, concatenated.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from detcli.data.base import DetDataset
from detcli.data.wrappers import ConcatDataset
from detcli.errors import ConfigError
from detcli.registry import DATASETS, build

#: Wrapper types, and the key holding the dataset(s) they wrap.
WRAPPERS: dict[str, str] = {"RepeatDataset": "dataset", "ClassBalancedDataset": "dataset", "ConcatDataset": "datasets",
                            "MultiImageMixDataset": "dataset"}


def _split_ann_files(cfg: Mapping[str, Any], path: str) -> tuple[list[dict[str, Any]], bool]:
    node = dict(cfg)
    ann_files = list(node.pop("ann_file"))
    separate_eval = bool(node.pop("separate_eval", True))
    prefixes = node.get("img_prefix")
    if isinstance(prefixes, (list, tuple)):
        if len(prefixes) != len(ann_files):
            raise ConfigError(f"{path}.img_prefix: {len(prefixes)} prefixes for {len(ann_files)} ann_file entries")
    nodes = []
    for i, ann_file in enumerate(ann_files):
        sub = copy.deepcopy(node)
        sub["ann_file"] = ann_file
        if isinstance(prefixes, (list, tuple)):
            sub["img_prefix"] = prefixes[i]
        nodes.append(sub)
    return nodes, separate_eval


def build_dataset(cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]], test_mode: bool, path: str = "data") -> DetDataset:
    """Build ``cfg`` (e.g. ``cfg["data"]["train"]``) from DATASETS; its ``pipeline`` is built too.

    Args:
        cfg: ``{type: CocoDataset | VOCDataset | ShapesDataset | RepeatDataset | ..., pipeline: [...], ...}``,
            or a list of such nodes (concatenated).
        test_mode: passed to every (inner) dataset unless its node sets ``test_mode`` itself.
        path: the node's key path, used in error messages (``data.train``).

    Raises:
        ConfigError: unknown type or keys (naming ``path``).
        DatasetError: the data itself is invalid.
    """
    return _walk(cfg, test_mode, path, dry_run=False)


def dry_run_dataset(cfg: Any, test_mode: bool, path: str) -> None:
    """Validate a dataset node (types, keys, value types) without building it; same forms as :func:`build_dataset`.

    A dry run is more lenient than a build about the shape of the tree: it accepts an empty list
    of datasets and a wrapper whose ``dataset(s)`` key is missing or not of the expected kind.
    """
    _walk(cfg, test_mode, path, dry_run=True)


def _walk(cfg: Any, test_mode: bool, path: str, dry_run: bool) -> Any:
    """One node of :func:`build_dataset` (the dataset) or :func:`dry_run_dataset` (None)."""
    if isinstance(cfg, (list, tuple)):
        if not cfg and not dry_run:
            raise ConfigError(f"{path}: an empty list of datasets")
        parts = [_walk(c, test_mode, f"{path}.{i}", dry_run) for i, c in enumerate(cfg)]
        return None if dry_run else ConcatDataset(parts)
    if not isinstance(cfg, Mapping):
        if dry_run:
            return build(cfg, DATASETS, path=path, dry_run=True)  # raises: not a {type: ...} node
        raise ConfigError(f"{path}: expected a dataset node {{type: ...}} or a list of them, got {cfg!r}")
    if cfg.get("type") in WRAPPERS:
        return _dry_run_wrapper(cfg, test_mode, path) if dry_run else _build_wrapper(cfg, test_mode, path)
    if isinstance(cfg.get("ann_file"), (list, tuple)):
        nodes, separate_eval = _split_ann_files(cfg, path)
        parts = [_walk(n, test_mode, f"{path}.ann_file.{i}", dry_run) for i, n in enumerate(nodes)]
        return None if dry_run else ConcatDataset(parts, separate_eval=separate_eval)
    return build(cfg, DATASETS, path=path, dry_run=dry_run, test_mode=test_mode)


def _build_wrapper(cfg: Mapping[str, Any], test_mode: bool, path: str) -> DetDataset:
    kind = cfg["type"]
    key = WRAPPERS[kind]
    node = dict(cfg)
    if key not in node:
        raise ConfigError(f"{path}: {kind} needs the key '{key}'")
    inner = node[key]
    if key == "datasets":
        if not isinstance(inner, (list, tuple)):
            raise ConfigError(f"{path}.datasets: expected a list of dataset nodes, got {inner!r}")
        node[key] = [_walk(c, test_mode, f"{path}.datasets.{i}", dry_run=False) for i, c in enumerate(inner)]
    else:
        node[key] = _walk(inner, test_mode, f"{path}.dataset", dry_run=False)
    return build(node, DATASETS, path=path)


def _dry_run_wrapper(cfg: Mapping[str, Any], test_mode: bool, path: str) -> None:
    key = WRAPPERS[cfg["type"]]
    inner = cfg.get(key)
    for i, c in enumerate(inner if isinstance(inner, (list, tuple)) else [inner] if inner is not None else []):
        _walk(c, test_mode, f"{path}.{key}.{i}" if key == "datasets" else f"{path}.{key}", dry_run=True)
    build({k: v for k, v in cfg.items() if k != key}, DATASETS, path=path, dry_run=True, **{key: None})
