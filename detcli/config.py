"""YAML presets with the MMDetection 2.x schema.

A preset is a YAML mapping whose top-level keys are those of an mmdet 2.x config (``model``,
``data``, ``optimizer``, ...). Loading one:

1. reads the YAML (a syntax error names the file and line);
2. drops top-level ``x-*`` keys, which only hold YAML anchors shared inside the file
   (``x-norm: &norm {mean: [...], std: [...]}`` then ``<<: *norm``); resolves ``_base_`` (a path or a list of paths, relative to the file, any depth): the bases
   are merged in order, then the file itself on top; a mapping carrying ``_delete_: true``
   replaces what it overrides instead of merging into it;
3. applies ``--cfg-options`` overrides (``a.b.c=V``, list indices as in
   ``data.train.pipeline.2.img_scale=[640,640]``; values are YAML-typed);
4. re-roots relative dataset paths under ``$DET_DATASETS`` when it is set;
5. checks the top-level keys and the keys of the untyped sections against the schema.

The result is a plain ``dict``: :func:`dump_config` writes it back as YAML that loads to the
same dict. Components are built from it by :func:`detcli.registry.build`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from detcli.errors import ConfigError, did_you_mean

#: Keys a preset may hold at the top level.
TOP_LEVEL_KEYS: frozenset[str] = frozenset(
    {
        "model",
        "data",
        "optimizer",
        "optimizer_config",
        "lr_config",
        "runner",
        "checkpoint_config",
        "log_config",
        "evaluation",
        "load_from",
        "resume_from",
        "auto_scale_lr",
        "work_dir",
        "seed",
        "custom_hooks",
        "log_level",
        "workflow",
        "dist_params",
        "sync_bn",
        "find_unused_parameters",
        "device",
        "fp16",
        "deterministic",
        "zoo",
    }
)

#: Keys allowed inside the sections that carry no ``type``. ``None`` means free-form.
SECTION_KEYS: dict[str, frozenset[str] | None] = {
    "data": frozenset({"samples_per_gpu", "workers_per_gpu", "persistent_workers", "group_by_aspect_ratio",
                       "train", "val", "test",
                       "train_dataloader", "val_dataloader", "test_dataloader"}),
    "optimizer_config": frozenset({"grad_clip", "type"}),
    "lr_config": frozenset({"policy", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch", "step",
                            "gamma", "min_lr", "min_lr_ratio", "power", "by_epoch"}),
    "runner": frozenset({"type", "max_epochs", "max_iters"}),
    "checkpoint_config": frozenset({"interval", "max_keep_ckpts", "save_optimizer", "by_epoch", "save_last"}),
    "log_config": frozenset({"interval", "hooks"}),
    "evaluation": frozenset({"interval", "metric", "save_best", "rule", "classwise", "start", "by_epoch",
                             "iou_thrs", "proposal_nums", "iou_thr", "scale_ranges", "eval_mode"}),
    "auto_scale_lr": frozenset({"enable", "base_batch_size"}),
    # the published counterpart of a preset: its weights file and published COCO val numbers
    "zoo": frozenset({"url", "box_ap", "mask_ap", "source"}),
    "dist_params": None,
    "fp16": None,
    "optimizer": None,  # {type: <torch.optim class>, ...}: checked by the engine against the optimizer
}

DATASET_PATH_KEYS = ("data_root", "ann_file", "img_prefix")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such preset file (list the shipped ones with `det config list`)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a YAML mapping of keys, not {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``child`` onto ``base`` recursively (a new dict; inputs untouched).

    Mappings merge key by key; anything else in ``child`` replaces the base value. A child mapping
    with ``_delete_: true`` replaces the base mapping whole (the marker is dropped).
    """
    out = copy.deepcopy(dict(base))
    for key, value in child.items():
        if isinstance(value, Mapping):
            value = dict(value)
            if value.pop("_delete_", False):
                out[key] = _strip_delete(value)
            elif isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = _strip_delete(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_delete(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return value


def _load_tree(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: _base_ inheritance cycle: {cycle}")
    data = _read_yaml(path)
    # `x-name: &anchor ...` entries only hold YAML anchors for this file (as in docker compose)
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.exists():
            raise ConfigError(f"{path}: _base_ file '{base}' not found (looked at {base_path})")
        merged = merge(merged, _load_tree(base_path, (*chain, path)))
    return merge(merged, data)


def parse_override_value(text: str) -> Any:
    """Parse the value of a ``K=V`` override as YAML; mmdet-style tuples ``(a,1)`` become lists."""
    stripped = text.strip()
    if stripped.startswith(("[", "(")):
        stripped = stripped.replace("(", "[").replace(")", "]")
    try:
        return yaml.safe_load(stripped) if stripped else ""
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: dict[str, Any], options: Sequence[str]) -> dict[str, Any]:
    """Apply ``--cfg-options`` (``a.b.0.c=V``) to a copy of ``cfg``.

    Every intermediate key must exist (list indices in range). The last key may be new only in a
    ``{type: ...}`` node (its constructor validates it later) or where the section schema allows it.
    """
    cfg = copy.deepcopy(cfg)
    for option in options:
        if "=" not in option:
            raise ConfigError(f"--cfg-options: '{option}' is not of the form KEY=VALUE (e.g. optimizer.lr=0.01)")
        key_path, raw = option.split("=", 1)
        keys = key_path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"--cfg-options: '{key_path}' is not a valid key path")
        value = parse_override_value(raw)
        node: Any = cfg
        walked: list[str] = []
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            here = ".".join(walked) or "<root>"
            if isinstance(node, list):
                if not key.lstrip("-").isdigit():
                    raise ConfigError(f"--cfg-options {key_path}: '{here}' is a list; use an index, not '{key}'")
                idx = int(key)
                if not -len(node) <= idx < len(node):
                    raise ConfigError(
                        f"--cfg-options {key_path}: index {idx} is out of range for '{here}' (length {len(node)})"
                    )
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if key not in node:
                    allowed = _new_key_allowed(walked, node, key, last)
                    if not allowed:
                        candidates = set(node) | set(_schema_keys(walked))
                        raise ConfigError(
                            f"--cfg-options {key_path}: no key '{key}' in '{here}'"
                            f"{did_you_mean(key, candidates)} (keys: {', '.join(sorted(map(str, candidates))) or 'none'})"
                        )
                if last:
                    node[key] = value
                else:
                    if key not in node:
                        node[key] = {}
                    node = node[key]
            else:
                raise ConfigError(
                    f"--cfg-options {key_path}: '{here}' holds {node!r}, which has no key '{key}'"
                )
            walked.append(key)
    return cfg


def _schema_keys(walked: list[str]) -> frozenset[str]:
    if not walked:
        return TOP_LEVEL_KEYS
    if len(walked) == 1:
        return SECTION_KEYS.get(walked[0]) or frozenset()
    return frozenset()


def _new_key_allowed(walked: list[str], node: dict[str, Any], key: str, last: bool) -> bool:
    if not walked:
        return key in TOP_LEVEL_KEYS
    if len(walked) == 1 and walked[0] in SECTION_KEYS:
        schema = SECTION_KEYS[walked[0]]
        return schema is None or key in schema
    return last and "type" in node


def reroot_datasets(cfg: dict[str, Any], root: str | None) -> dict[str, Any]:
    """Re-root relative dataset paths under ``root`` (the ``DET_DATASETS`` variable).

    In every dataset node (``data.train/val/test`` and datasets nested in wrappers) a relative
    ``data_root`` becomes ``root``, and ``ann_file``/``img_prefix`` that started with the old
    ``data_root`` are moved with it. Without a ``data_root``, relative ``ann_file``/``img_prefix``
    are joined onto ``root``.
    """
    if not root:
        return cfg
    cfg = copy.deepcopy(cfg)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if "type" in node and any(k in node for k in DATASET_PATH_KEYS):
                old = node.get("data_root")
                if isinstance(old, str) and not os.path.isabs(old):
                    node["data_root"] = root

                    def move(v: Any) -> Any:
                        if isinstance(v, str) and v.startswith(old):
                            return os.path.join(root, v[len(old):].lstrip("/"))
                        return v
                elif old is None:

                    def move(v: Any) -> Any:
                        if isinstance(v, str) and v and not os.path.isabs(v):
                            return os.path.join(root, v)
                        return v
                else:

                    def move(v: Any) -> Any:
                        return v
                for k in ("ann_file", "img_prefix"):  # a str, or a list (one dataset per ann_file)
                    if k in node:
                        v = node[k]
                        node[k] = [move(x) for x in v] if isinstance(v, list) else move(v)
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    for split in ("train", "val", "test"):
        visit(cfg.get("data", {}).get(split))
    return cfg


def check_schema(cfg: Mapping[str, Any], source: str = "<config>") -> None:
    """Check top-level keys and the keys of untyped sections; raise naming file and key."""
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{source}: unknown top-level key '{key}'{did_you_mean(key, TOP_LEVEL_KEYS)} "
                f"(valid: {', '.join(sorted(TOP_LEVEL_KEYS))})"
            )
    for section, allowed in SECTION_KEYS.items():
        value = cfg.get(section)
        if value is None or allowed is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{section}' must be a mapping, got {value!r}")
        for key in value:
            if key not in allowed:
                raise ConfigError(
                    f"{source}: unknown key '{section}.{key}'{did_you_mean(key, allowed)} "
                    f"(valid: {', '.join(sorted(allowed))})"
                )


def load_config(path: str | os.PathLike[str], cfg_options: Sequence[str] | None = None) -> dict[str, Any]:
    """Load a preset: ``_base_`` inheritance, overrides, ``$DET_DATASETS`` and schema checks.

    ``path`` is a file, or the name of a shipped preset (``quickstart`` or ``quickstart.yaml``).
    """
    resolved = resolve_preset_path(path)
    cfg = _load_tree(resolved, ())
    cfg = _strip_delete(cfg)
    if cfg_options:
        cfg = apply_overrides(cfg, cfg_options)
    cfg = reroot_datasets(cfg, os.environ.get("DET_DATASETS"))
    check_schema(cfg, str(path))
    return cfg


def resolve_preset_path(path: str | os.PathLike[str]) -> Path:
    """Return the file for ``path``: an existing file, or a preset shipped with det by name."""
    p = Path(path)
    if p.exists():
        return p
    from detcli.resources import find_preset

    shipped = find_preset(str(path))
    if shipped is not None:
        return shipped
    from detcli.resources import list_presets

    names = [x.stem for x in list_presets()]
    raise ConfigError(
        f"{path}: no such preset file{did_you_mean(p.stem, names)} (shipped presets: {', '.join(names) or 'none'})"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dump_config(cfg: Mapping[str, Any]) -> str:
    """Return ``cfg`` as YAML; ``yaml.safe_load(dump_config(c)) == c`` (tuples become lists)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None, width=100)
