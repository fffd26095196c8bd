"""Which weights a command means: checkpoint specs (path, URI, ``zoo``, ``zoo:PRESET``), the presets' published
model-zoo entries, and class names for files that carry none."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detcli.errors import ConfigError


def resolve_checkpoint(spec: str | os.PathLike[str], cfg: Mapping[str, Any] | None = None) -> Path:
    """A local checkpoint file for ``spec``: a path, a weights URI (``http(s)://``, ...: downloaded once into
    torch's cache), or ``zoo`` (the published weights named by ``cfg``'s ``zoo.url``).

    Raises:
        ConfigError: ``zoo`` without a preset, or a preset without a ``zoo`` entry.
        CheckpointError: missing file, failed download.
    """
    from detcli.weights import resolve_uri

    text = os.fspath(spec)
    if text == "zoo":
        if cfg is None:
            raise ConfigError("checkpoint 'zoo' needs a preset: det test PRESET zoo (or det infer zoo:PRESET IMG)")
        url = (cfg.get("zoo") or {}).get("url")
        if not url:
            raise ConfigError("this preset names no published weights (no zoo.url); `det config list` shows the "
                              "presets that have them")
        return resolve_uri(str(url))
    return resolve_uri(text)


def list_zoo() -> list[dict[str, Any]]:
    """Every shipped preset as ``{name, box_ap, mask_ap, source, url}`` (None where it names no published weights)."""
    from detcli.config import load_config
    from detcli.resources import list_presets

    rows = []
    for path in list_presets():
        if path.stem.startswith("_"):
            continue
        zoo = dict(load_config(path).get("zoo") or {})
        rows.append({"name": path.stem, "box_ap": zoo.get("box_ap"), "mask_ap": zoo.get("mask_ap"),
                     "source": zoo.get("source"), "url": zoo.get("url")})
    return rows


def split_zoo_spec(spec: str, cfg: Mapping[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """``zoo:PRESET`` -> ``("zoo", PRESET's config)`` (``cfg`` when one is given); anything else unchanged."""
    if not str(spec).startswith("zoo:"):
        return spec, None if cfg is None else dict(cfg)
    if cfg is not None:
        return "zoo", dict(cfg)
    from detcli.config import load_config, resolve_preset_path

    return "zoo", load_config(resolve_preset_path(str(spec)[len("zoo:"):]))


def config_classes(cfg: Mapping[str, Any], num_classes: int) -> tuple[str, ...]:
    """Class names a config declares (``data.test|val|train.classes``); COCO's 80 names for an 80-class COCO
    preset; else ``class_0``, ``class_1``, ..."""
    data = cfg.get("data") or {}
    for split in ("test", "val", "train"):
        node = data.get(split)
        node = node[0] if isinstance(node, list) and node else node
        if isinstance(node, Mapping) and isinstance(node.get("classes"), (list, tuple)):
            return tuple(str(c) for c in node["classes"])
    test = data.get("test")
    node = test if isinstance(test, Mapping) else {}
    if num_classes == 80 and "Coco" in str(node.get("type", "")):
        from detcli.weights import coco_classes

        return coco_classes()
    return tuple(f"class_{i}" for i in range(num_classes))
