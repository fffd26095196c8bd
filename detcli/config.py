"""YAML presets with the MMDetection 2.x schema.

A preset is a YAML mapping whose top-level keys are those of an mmdet 2.x config (``model``,
``data``, ``optimizer``, ...). Loading one:

1. reads the YAML (a syntax error names the file and line);
2. drops top-level ``x-*`` keys, which only hold YAML anchors shared inside the file
   (``x-norm: &norm {mean: [...], std: [...]}`` then ``<<: *norm``); resolves ``_base_`` (a path
   or a list of paths, relative to the file, or the names of shipped presets): the bases are
   merged in order, then the file itself on top; a mapping carrying ``_delete_: true`` replaces
   what it overrides instead of merging into it;
3. applies ``--cfg-options`` overrides (``a.b.c=V``, list indices as in
   ``data.train.pipeline.2.img_scale=[640,640]``; values are read as mmcv's ``DictAction`` reads
   them: ``None``/``null`` is None, ``dict(type=nms,iou_threshold=0.5)`` a mapping, ``(1,2)`` a
   list, other scalars YAML-typed; a key may be added in a ``{type: ...}`` node, in a section
   whose schema allows it and anywhere below ``model.train_cfg``/``model.test_cfg``, whose keys
   the heads check when they are built);
   then substitutes the ``vars`` mapping: ``${name}`` as a whole value takes the variable's value
   with its type, inside a longer string its text (:func:`substitute_vars`); ``vars`` merges
   through ``_base_`` and takes overrides (``vars.img_scale=[640,640]``) before substitution;
4. checks the top-level keys and the keys of the untyped sections against the schema, and the
   type and range of the values that have no ``type`` node (:func:`check_values`);
5. re-roots relative dataset paths under ``$DET_DATASETS`` when it is set.

The result is a plain ``dict``: :func:`dump_config` writes it back as YAML that loads to the
same dict. Components are built from it by :func:`detcli.registry.build`.

Values that carry no ``type`` of their own (the optimizer's numbers, batch sizes, intervals, the
lr schedule's numbers; :data:`VALUE_TYPES`) are checked by type and range in step 4, so
``--cfg-options optimizer.lr=abc`` fails when the config is loaded, naming the key, the value and
the expected type. Numbers follow YAML 1.2: ``1e-3`` is a float (PyYAML alone reads it as a string).

Limits (each refused with one :class:`~detcli.errors.ConfigError` naming the file, before any
work): a preset must be a regular file (not a directory, device or pipe) of at most
:data:`MAX_PRESET_BYTES` (1 MiB), UTF-8 text (else the byte offset of the first bad byte is
named); mappings and lists nest at most :data:`MAX_NESTING` (100) levels deep and a document holds
at most :data:`MAX_EXPANDED_NODES` (100 000) values once its YAML aliases are expanded (this
stops alias bombs); an alias may not refer to the node that contains it (recursive alias); a
``_base_`` path is at most :data:`MAX_PATH_BYTES` (4096) bytes with names of at most 255 bytes,
and ``_base_`` chains are at most :data:`MAX_BASE_DEPTH` (32) files deep. A ``_base_`` that is a
bare name with no file next to the preset (``_base_: quickstart``) is the shipped preset of that
name, as in ``det train quickstart``; a relative ``_base_/...`` path with no such file next to the
preset is det's shipped fragment (``_base_: _base_/models/retinanet_r50_fpn.yaml`` works from any
folder). The same nesting and size limits apply to
``--cfg-options`` values.
"""

from __future__ import annotations

import copy
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
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
        "custom_imports",
        "momentum_config",
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
    "optimizer_config": frozenset({"grad_clip", "type", "cumulative_iters", "loss_scale"}),
    "lr_config": frozenset({"policy", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch", "step",
                            "gamma", "min_lr", "min_lr_ratio", "power", "by_epoch", "num_last_epochs",
                            # Cyclic / OneCycle / CosineRestart (detcli.engine.lr)
                            "target_ratio", "cyclic_times", "step_ratio_up", "anneal_strategy", "max_lr",
                            "total_steps", "pct_start", "div_factor", "final_div_factor", "three_phase",
                            "periods", "restart_weights"}),
    "momentum_config": frozenset({"policy", "by_epoch", "target_ratio", "cyclic_times", "step_ratio_up",
                                  "anneal_strategy", "gamma", "base_momentum", "max_momentum", "pct_start",
                                  "three_phase", "warmup", "warmup_iters", "warmup_ratio"}),
    "custom_imports": frozenset({"imports", "allow_failed_imports"}),
    "runner": frozenset({"type", "max_epochs", "max_iters"}),
    "checkpoint_config": frozenset({"interval", "max_keep_ckpts", "save_optimizer", "by_epoch", "save_last"}),
    "log_config": frozenset({"interval", "hooks"}),
    "evaluation": frozenset({"interval", "metric", "save_best", "rule", "classwise", "start", "by_epoch",
                             "iou_thrs", "proposal_nums", "iou_thr", "scale_ranges", "eval_mode",
                             "dynamic_intervals"}),
    "auto_scale_lr": frozenset({"enable", "base_batch_size"}),
    # the published counterpart of a preset: its weights file and published COCO val numbers
    "zoo": frozenset({"url", "box_ap", "mask_ap", "source"}),
    "dist_params": None,
    "fp16": None,
    "optimizer": None,  # {type: <torch.optim class>, ...}: checked by the engine against the optimizer
}

#: Values of the top-level ``log_level`` (the level of det's logger during a run).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

DATASET_PATH_KEYS = ("data_root", "ann_file", "img_prefix")

#: The top-level mapping of a preset's variables, referenced as ``${name}`` (see :func:`substitute_vars`).
VARS_KEY = "vars"
#: A relative ``_base_`` starting with this folder that is not next to the preset is det's shipped fragment.
SHIPPED_BASE_DIR = "_base_"


#: Largest preset file det reads, in bytes; a bigger one is refused before it is read.
MAX_PRESET_BYTES = 1 << 20
#: Deepest nesting of mappings and lists in a preset or an override value (aliases expanded).
MAX_NESTING = 100
#: Most values (mappings, lists, scalars) one YAML document may hold once its aliases are expanded.
MAX_EXPANDED_NODES = 100_000
#: Longest ``_base_`` chain (a base of a base of ...).
MAX_BASE_DEPTH = 32
#: Longest ``_base_`` path in bytes (each name in it: at most :data:`MAX_NAME_BYTES`).
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

# YAML 1.2 floats: PyYAML (YAML 1.1) wants a dot, so `lr: 1e-3` would be the string '1e-3'.
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+))$""",
    re.X,
)


class _LimitError(yaml.MarkedYAMLError):
    """A YAML document over one of det's limits (nesting, expanded size, recursive alias)."""


class _PresetLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with det's nesting and alias limits and YAML 1.2 exponent floats."""

    _det_depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._det_depth += 1
        try:
            if self._det_depth > MAX_NESTING:
                raise _LimitError(
                    None, None,
                    f"mappings and lists nested deeper than {MAX_NESTING} levels (det's limit)",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._det_depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expanded(node)
        return node


class _PresetDumper(yaml.SafeDumper):
    """Quotes the strings :class:`_PresetLoader` would read as numbers (``'1e-3'``)."""


for _cls in (_PresetLoader, _PresetDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _node_children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded(root: Any) -> None:
    """Refuse recursive aliases, and documents too big or too deep once aliases are expanded.

    Iterative (no recursion) and linear in the composed nodes, however big the expansion.
    """
    if root is None:
        return
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            kids = _node_children(node)
            size = 1 + sum(done[id(k)][0] for k in kids)
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            if size > MAX_EXPANDED_NODES:
                raise _LimitError(
                    None, None,
                    f"this node holds more than {MAX_EXPANDED_NODES} values once its aliases are expanded "
                    "(det's limit, against alias bombs); write it with fewer nested aliases",
                    node.start_mark,
                )
            if depth > MAX_NESTING:
                raise _LimitError(
                    None, None,
                    f"mappings and lists nested deeper than {MAX_NESTING} levels once aliases are expanded (det's limit)",
                    node.start_mark,
                )
            done[key] = (size, depth)
        elif key in open_:
            raise _LimitError(
                None, None,
                "recursive alias: the anchored node here contains an alias to itself (a preset must be a tree)",
                node.start_mark,
            )
        elif key not in done:
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _node_children(node))


def _parse_yaml(text: str) -> Any:
    """``yaml.load`` with :class:`_PresetLoader`; every failure is a ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=_PresetLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        raise
    except Exception as e:  # noqa: BLE001  PyYAML's constructors: `2021-02-30`, `!!int ''`, a 5000-digit int
        raise yaml.YAMLError(f"a value cannot be read: {type(e).__name__}: {e}") from e


def _read_text(path: Path) -> str:
    """The text of a preset file, refusing non-regular files, big files and non-UTF-8 bytes unread."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such preset file (list the shipped ones with `det config list`)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: is a directory; give a preset YAML file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file (a device, pipe or socket); a preset must be a YAML file")
    too_big = (f"{path}: the file is larger than {MAX_PRESET_BYTES} bytes (1 MiB), det's limit for a preset; "
               "is it really a preset?")
    if info.st_size > MAX_PRESET_BYTES:
        raise ConfigError(too_big)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(raw) > MAX_PRESET_BYTES:
        raise ConfigError(too_big)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line}) "
            "cannot be decoded; save the file as UTF-8"
        ) from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or (str(e).splitlines() or ["invalid YAML"])[0]
    if isinstance(e, _LimitError):
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _read_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {_yaml_problem(e)}") from e
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


def _load_tree(path: Path, chain: tuple[Path, ...],
               origins: dict[tuple[str | int, ...], Path] | None = None) -> dict[str, Any]:
    """The merged tree of ``path`` and its bases; ``origins`` collects, for every string holding a
    ``${name}`` reference, the file that wrote it (the child's entry wins), for error messages."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # RuntimeError: a symlink loop
        raise ConfigError(f"{path}: cannot resolve the path: {e}") from e
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: _base_ inheritance cycle: {cycle}")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{chain[0]}: _base_ chain deeper than {MAX_BASE_DEPTH} files (det's limit), at {path}")
    data = _read_yaml(path)
    # `x-name: &anchor ...` entries only hold YAML anchors for this file (as in docker compose)
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    bases = data.pop("_base_", None)
    if bases is None:
        _record_references(data, (), path, origins)
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {_show(bases)}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, _load_tree(_base_path(path, base), (*chain, path), origins))
    _record_references(data, (), path, origins)
    return merge(merged, data)


def _record_references(node: Any, where: tuple[str | int, ...], path: Path,
                       origins: dict[tuple[str | int, ...], Path] | None) -> None:
    if origins is None:
        return
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(node, where)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, str) and "${" in value:
            origins[at] = path
        elif isinstance(value, Mapping):
            stack.extend((v, (*at, str(k))) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(value))


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (for messages)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 (a repr never makes a message fail)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_too_long(text: str) -> bool:
    def size(t: str) -> int:
        return len(t.encode("utf-8", "surrogatepass"))

    return size(text) > MAX_PATH_BYTES or any(size(part) > MAX_NAME_BYTES for part in text.split("/"))


def _base_path(path: Path, base: str) -> Path:
    """The file of one ``_base_`` entry of ``path``: relative to it, absolute, or a shipped preset's name."""
    if not base.strip():
        raise ConfigError(f"{path}: _base_ holds an empty path")
    if "\0" in base:
        raise ConfigError(f"{path}: _base_ {_show(base)} contains a NUL character")
    if _path_too_long(base):
        raise ConfigError(
            f"{path}: _base_ {_show(base)} is too long ({len(base)} characters; a path may have at most "
            f"{MAX_PATH_BYTES} bytes and each name in it {MAX_NAME_BYTES})"
        )
    candidate = Path(base) if Path(base).is_absolute() else path.parent / base
    try:
        if candidate.exists():
            if not candidate.is_file():
                raise ConfigError(f"{path}: _base_ '{base}' is not a regular file (a directory, device or pipe); "
                                  "a base must be a preset YAML file")
            return candidate
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: _base_ '{base}' cannot be read: {getattr(e, 'strerror', None) or e}") from e
    shipped_fragment = _shipped_fragment(base)
    if shipped_fragment is not None:
        return shipped_fragment
    bare = "/" not in base and os.sep not in base
    if bare:
        from detcli.resources import find_preset

        shipped = find_preset(base)
        if shipped is not None:
            return shipped
    hint = " or a shipped preset" if bare else ""
    raise ConfigError(f"{path}: _base_ file '{base}' not found (looked at {candidate}{hint})")


def _shipped_fragment(base: str) -> Path | None:
    """``_base_/models/x.yaml`` with no such file next to the preset: det's shipped fragment of that name."""
    parts = Path(base).parts
    if Path(base).is_absolute() or len(parts) < 2 or parts[0] != SHIPPED_BASE_DIR or ".." in parts:
        return None
    from detcli.resources import presets_dir

    root = presets_dir()
    if root is None:
        return None
    candidate = root.joinpath(*parts)
    return candidate if candidate.is_file() else None


def _override_scalar(text: str) -> Any:
    """A scalar of an override value: YAML-typed, ``None`` is null, anything unreadable stays text."""
    stripped = text.strip()
    if stripped in ("None", "none"):
        return None
    if not stripped:
        return ""
    try:
        value = _parse_yaml(stripped)
    except _LimitError:
        raise
    except yaml.YAMLError:
        return stripped
    if isinstance(value, (dict, list)):  # `a: b` inside dict(...)/[...] is text, not a nested mapping
        return stripped
    return value


def _split_top(text: str, where: str) -> list[str]:
    """Split ``text`` at the commas outside brackets and quotes."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--cfg-options value {_show(where)}: unbalanced '{ch}'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0 or quote:
        raise ConfigError(f"--cfg-options value {_show(where)}: unbalanced brackets or quotes")
    parts.append(text[start:])
    if parts and not parts[-1].strip():  # `(1,)` and `[a, b,]`
        parts.pop()
    return parts


_DICT_CALL = re.compile(r"^dict\s*\(")
_KEYWORD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$", re.S)


def _mmcv_value(text: str, where: str, depth: int = 0) -> Any:
    """mmcv ``DictAction`` syntax: ``dict(k=v, ...)``, ``[a, b]``, ``(a, b)`` (a list), scalars."""
    if depth > MAX_NESTING:
        raise ConfigError(f"--cfg-options value {_show(where)}: nested deeper than {MAX_NESTING} levels (det's limit)")
    t = text.strip()
    if _DICT_CALL.match(t) and t.endswith(")"):
        inner = t[t.index("(") + 1 : -1]
        out: dict[str, Any] = {}
        for part in _split_top(inner, where):
            m = _KEYWORD.match(part)
            if m is None:
                raise ConfigError(f"--cfg-options value {_show(where)}: '{part.strip()}' inside dict(...) is not KEY=VALUE")
            out[m.group(1)] = _mmcv_value(m.group(2), where, depth + 1)
        return out
    if (t.startswith("[") and t.endswith("]")) or (t.startswith("(") and t.endswith(")")):
        return [_mmcv_value(p, where, depth + 1) for p in _split_top(t[1:-1], where)]
    if t.startswith(("[", "(")) or _DICT_CALL.match(t):
        raise ConfigError(f"--cfg-options value {_show(where)}: '{_show(t, 40)}' is not closed "
                          "(write [a, b], (a, b) or dict(k=v, ...))")
    if t.startswith("{"):
        return _override_scalar_or_yaml(t)
    return _override_scalar(t)


def _override_scalar_or_yaml(text: str) -> Any:
    try:
        return _parse_yaml(text)
    except _LimitError:
        raise
    except yaml.YAMLError:
        return text


def parse_override_value(text: str) -> Any:
    """Parse the value of a ``K=V`` override as mmcv's ``DictAction`` does, with YAML scalars.

    ``None``/``null``/``~`` are None; ``dict(type=nms,iou_threshold=0.5)`` is a mapping (nested
    ``dict(...)`` and lists inside too); ``[a, b]`` and mmdet-style tuples ``(a,1)`` are lists;
    ``{k: v}`` is a YAML flow mapping; any other text is a YAML scalar (``1e-3`` a float, ``true``
    a bool), and text that is not valid YAML stays a string. Raises :class:`ConfigError` for a
    value over the loader's limits (nesting, alias expansion) or with unbalanced brackets.
    """
    stripped = text.strip()
    try:
        if stripped.startswith(("[", "(")) or _DICT_CALL.match(stripped):
            return _mmcv_value(stripped, text)
        if stripped.startswith("{"):
            return _override_scalar_or_yaml(stripped)
        return _override_scalar(stripped)
    except _LimitError as e:
        raise ConfigError(f"--cfg-options value {_show(text)}: {e.problem}") from e


_INDEX = re.compile(r"-?[0-9]+")


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
                if not _INDEX.fullmatch(key):
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
                    f"--cfg-options {key_path}: '{here}' holds {_show(node)}, which has no key '{key}'"
                )
            walked.append(key)
    return cfg


def _schema_keys(walked: list[str]) -> frozenset[str]:
    if not walked:
        return TOP_LEVEL_KEYS
    if len(walked) == 1:
        return SECTION_KEYS.get(walked[0]) or frozenset()
    return frozenset()


#: Mappings below ``model`` whose keys are checked when the model is built (the heads parse
#: them into typed settings), so an override may add keys there (``model.test_cfg.deploy_nms_pre``).
FREE_MODEL_MAPPINGS = ("train_cfg", "test_cfg")


def _new_key_allowed(walked: list[str], node: dict[str, Any], key: str, last: bool) -> bool:
    if not walked:
        return key in TOP_LEVEL_KEYS or key == VARS_KEY
    if walked[0] == VARS_KEY:
        return True
    if len(walked) == 1 and walked[0] in SECTION_KEYS:
        schema = SECTION_KEYS[walked[0]]
        return schema is None or key in schema
    if walked[0] == "model" and any(k in FREE_MODEL_MAPPINGS for k in walked[1:]):
        return True
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


# --- typed values -------------------------------------------------------------------------------

def is_number(v: Any) -> bool:
    """A finite int or float, not a bool (config values that must be numbers)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and math.isfinite(v)


def is_int(v: Any) -> bool:
    """An int, not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


class ValueType:
    """The type of a config value: a check, its description in messages and an example."""

    def __init__(self, description: str, check: Callable[[Any], bool], example: str, nullable: bool = False) -> None:
        self.description = description + (", or null" if nullable else "")
        self.check = check
        self.example = example
        self.nullable = nullable

    def accepts(self, value: Any) -> bool:
        return (value is None and self.nullable) or (value is not None and self.check(value))


POSITIVE_NUMBER = ValueType("a positive finite number", lambda v: is_number(v) and v > 0, "0.02")
NON_NEGATIVE_NUMBER = ValueType("a finite number >= 0", lambda v: is_number(v) and v >= 0, "0.0001")
FINITE_NUMBER = ValueType("a finite number", is_number, "1.0")
RATIO = ValueType("a number in (0, 1]", lambda v: is_number(v) and 0 < v <= 1, "0.001")
POSITIVE_INT = ValueType("a positive integer", lambda v: is_int(v) and v >= 1, "2")
NON_NEGATIVE_INT = ValueType("an integer >= 0", lambda v: is_int(v) and v >= 0, "2")
INTERVAL = ValueType("a positive integer, or -1", lambda v: is_int(v) and (v >= 1 or v == -1), "1")
INTEGER = ValueType("an integer", is_int, "3")
BOOLEAN = ValueType("true or false", lambda v: isinstance(v, bool), "true")
STEPS = ValueType(
    "a positive integer or a list of them",
    lambda v: (is_int(v) and v >= 1) or (isinstance(v, list) and all(is_int(x) and x >= 1 for x in v)),
    "[8, 11]",
)
BETAS = ValueType(
    "a list of two numbers in [0, 1)",
    lambda v: isinstance(v, list) and len(v) == 2 and all(is_number(x) and 0 <= x < 1 for x in v),
    "[0.9, 0.999]",
)

_LOADER_KEYS = {"samples_per_gpu": POSITIVE_INT, "workers_per_gpu": NON_NEGATIVE_INT}

#: Types of the config values that have no ``type`` node of their own to check them, by key path
#: (``*``: any key of that mapping). A value that is absent is not checked (its default applies).
VALUE_TYPES: dict[str, ValueType] = {
    "optimizer.lr": POSITIVE_NUMBER,
    "optimizer.momentum": NON_NEGATIVE_NUMBER,
    "optimizer.weight_decay": NON_NEGATIVE_NUMBER,
    "optimizer.dampening": NON_NEGATIVE_NUMBER,
    "optimizer.nesterov": BOOLEAN,
    "optimizer.eps": POSITIVE_NUMBER,
    "optimizer.alpha": NON_NEGATIVE_NUMBER,
    "optimizer.betas": BETAS,
    "optimizer.paramwise_cfg.bias_lr_mult": NON_NEGATIVE_NUMBER,
    "optimizer.paramwise_cfg.bias_decay_mult": NON_NEGATIVE_NUMBER,
    "optimizer.paramwise_cfg.norm_decay_mult": NON_NEGATIVE_NUMBER,
    "optimizer.paramwise_cfg.custom_keys.*.lr_mult": NON_NEGATIVE_NUMBER,
    "optimizer.paramwise_cfg.custom_keys.*.decay_mult": NON_NEGATIVE_NUMBER,
    "optimizer_config.grad_clip.max_norm": POSITIVE_NUMBER,
    **{f"data.{key}": kind for key, kind in _LOADER_KEYS.items()},
    **{
        f"data.{split}.{key}": kind
        for split in ("train", "val", "test", "train_dataloader", "val_dataloader", "test_dataloader")
        for key, kind in _LOADER_KEYS.items()
    },
    "runner.max_epochs": POSITIVE_INT,
    "runner.max_iters": POSITIVE_INT,
    "checkpoint_config.interval": INTERVAL,
    "checkpoint_config.max_keep_ckpts": INTEGER,
    "checkpoint_config.by_epoch": BOOLEAN,
    "checkpoint_config.save_optimizer": BOOLEAN,
    "checkpoint_config.save_last": BOOLEAN,
    "evaluation.interval": POSITIVE_INT,
    "evaluation.start": ValueType("an integer >= 0", lambda v: is_int(v) and v >= 0, "0", nullable=True),
    "evaluation.by_epoch": BOOLEAN,
    "log_config.interval": POSITIVE_INT,
    "lr_config.warmup_iters": NON_NEGATIVE_INT,
    "lr_config.warmup_ratio": RATIO,
    "lr_config.warmup_by_epoch": BOOLEAN,
    "lr_config.by_epoch": BOOLEAN,
    "lr_config.step": STEPS,
    "lr_config.gamma": POSITIVE_NUMBER,
    "lr_config.min_lr": ValueType("a finite number >= 0", lambda v: is_number(v) and v >= 0, "0.0001", nullable=True),
    "lr_config.min_lr_ratio": ValueType("a finite number >= 0", lambda v: is_number(v) and v >= 0, "0.01", nullable=True),
    "lr_config.power": FINITE_NUMBER,
    "lr_config.num_last_epochs": NON_NEGATIVE_INT,
    "auto_scale_lr.enable": BOOLEAN,
    "auto_scale_lr.base_batch_size": POSITIVE_INT,
    "seed": ValueType("an integer", is_int, "0", nullable=True),
    "log_level": ValueType("one of DEBUG, INFO, WARNING, ERROR", lambda v: v in LOG_LEVELS, "INFO", nullable=True),
}


def _values_at(node: Any, keys: list[str], walked: list[str]) -> list[tuple[str, Any]]:
    """``(key path, value)`` of every value at ``keys`` below ``node`` (``*``: every key)."""
    if not keys:
        return [(".".join(walked), node)]
    if not isinstance(node, Mapping):
        return []
    key, rest = keys[0], keys[1:]
    found: list[tuple[str, Any]] = []
    for k in (list(node) if key == "*" else [key]):
        if k in node:
            found.extend(_values_at(node[k], rest, [*walked, str(k)]))
    return found


def check_values(cfg: Mapping[str, Any], source: str = "<config>") -> None:
    """Check the values of :data:`VALUE_TYPES` present in ``cfg`` by type and range.

    Raises:
        ConfigError: ``"<source>: optimizer.lr: expected a positive finite number (e.g. optimizer.lr: 0.02),
            got 'abc' (a str)"``.
    """
    for pattern, kind in VALUE_TYPES.items():
        for path, value in _values_at(cfg, pattern.split("."), []):
            if not kind.accepts(value):
                leaf = path.rsplit(".", 1)[-1]
                raise ConfigError(
                    f"{source}: {path}: expected {kind.description} (e.g. {leaf}: {kind.example}), "
                    f"got {_show(value)} (a {type(value).__name__})"
                )



def check_schema(cfg: Mapping[str, Any], source: str = "<config>") -> None:
    """Check top-level keys, the keys of untyped sections and their values (:func:`check_values`).

    Raises:
        ConfigError: naming ``source``, the key path and, for a value, what was expected.
    """
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{source}: unknown top-level key {_show(key)}{did_you_mean(key, TOP_LEVEL_KEYS)} "
                f"(valid: {', '.join(sorted(TOP_LEVEL_KEYS))})"
            )
    for section, allowed in SECTION_KEYS.items():
        value = cfg.get(section)
        if value is None or allowed is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: '{section}' must be a mapping, got {_show(value)}")
        for key in value:
            if key not in allowed:
                raise ConfigError(
                    f"{source}: unknown key {_show(f'{section}.{key}')}{did_you_mean(key, allowed)} "
                    f"(valid: {', '.join(sorted(allowed))})"
                )
    check_values(cfg, source)


# --- variables --------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute_vars(cfg: Mapping[str, Any], source: str = "<config>",
                    origins: Mapping[tuple[str | int, ...], Path] | None = None) -> dict[str, Any]:
    """Replace ``${name}`` references by the values of the top-level ``vars`` mapping, and drop it.

    A string that is exactly ``${name}`` becomes the variable's value with its type (a list stays a
    list); inside a longer string the value (a string, number or bool) is inserted as text;
    ``$${`` is a literal ``${``. Variables may refer to other variables. ``vars`` merges through
    ``_base_`` like any mapping, so a child's value wins before any substitution happens.

    Raises:
        ConfigError: an undefined name, a cycle between variables, a malformed reference or a list
            or mapping inserted into text, naming the file that holds the reference and its key.
    """
    cfg = dict(cfg)
    variables = cfg.pop(VARS_KEY, None)
    if variables is None:
        variables = {}
    if not isinstance(variables, Mapping):
        raise ConfigError(f"{source}: '{VARS_KEY}' must be a mapping of names to values, got {_show(variables)}")
    for name in variables:
        if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
            raise ConfigError(f"{source}: {VARS_KEY}: {_show(name)} is not a variable name "
                              "(letters, digits and _, not starting with a digit)")
    origins = origins or {}
    done: dict[str, Any] = {}
    shape: dict[str, tuple[int, int]] = {}  # name -> (values, nesting) of its resolved value
    produced = [0]  # values written so far, copies included: bounded like YAML aliases

    def spend(count: int, at: tuple[str | int, ...]) -> None:
        produced[0] += count
        if produced[0] > MAX_EXPANDED_NODES:
            raise ConfigError(f"{where(at)}: {'.'.join(map(str, at))}: the config holds more than {MAX_EXPANDED_NODES} "
                              "values once its variables are substituted (det's limit)")

    def where(at: tuple[str | int, ...]) -> str:
        return str(origins.get(at, source))

    def lookup(name: str, at: tuple[str | int, ...], stack: tuple[str, ...]) -> Any:
        dotted = ".".join(map(str, at))
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(f"{where(at)}: {dotted}: '${{{name}}}' is not a variable reference "
                              "(write ${name}, or $${ for a literal ${)")
        if name in done:
            return done[name]
        if name in stack:
            cycle = " -> ".join(f"{VARS_KEY}.{n}" for n in (*stack[stack.index(name):], name))
            raise ConfigError(f"{where(at)}: {dotted}: variables refer to each other in a cycle: {cycle}")
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise ConfigError(f"{where(at)}: {dotted}: undefined variable '${{{name}}}'"
                              f"{did_you_mean(name, variables)} (vars defined: {known})")
        value = visit(variables[name], (VARS_KEY, name), (*stack, name))
        done[name] = value
        shape[name] = _shape(value)
        return value

    def text(match: re.Match[str], at: tuple[str | int, ...], stack: tuple[str, ...]) -> str:
        if match.group(0) == "$${":
            return "${"
        value = lookup(match.group(1), at, stack)
        if isinstance(value, (Mapping, list)) or value is None:
            raise ConfigError(f"{where(at)}: {'.'.join(map(str, at))}: '${{{match.group(1)}}}' holds "
                              f"{_show(value)}, which cannot be inserted into text; use it as the whole value")
        inserted = str(value).lower() if isinstance(value, bool) else str(value)
        spend(len(inserted) // 64, at)  # long text counts too, against text bombs
        return inserted

    def visit(value: Any, at: tuple[str | int, ...], stack: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            whole = _REFERENCE.fullmatch(value)
            if whole is not None and whole.group(1) is not None:
                found = lookup(whole.group(1), at, stack)
                count, depth = shape[whole.group(1)]
                spend(count, at)
                if depth + len(at) > MAX_NESTING:
                    raise ConfigError(f"{where(at)}: {'.'.join(map(str, at))}: nested deeper than {MAX_NESTING} "
                                      "levels once variables are substituted (det's limit)")
                return copy.deepcopy(found)
            return _REFERENCE.sub(lambda m: text(m, at, stack), value)
        spend(1, at)
        if isinstance(value, Mapping):
            return {k: visit(v, (*at, str(k)), stack) for k, v in value.items()}
        if isinstance(value, list):
            return [visit(v, (*at, i), stack) for i, v in enumerate(value)]
        return value

    for name in variables:  # every variable is checked, used or not
        lookup(name, (VARS_KEY, name), ())
    return {k: visit(v, (str(k),), ()) for k, v in cfg.items()}


def _shape(value: Any) -> tuple[int, int]:
    """``(number of values, nesting depth)`` of a plain tree."""
    if isinstance(value, Mapping):
        kids = [_shape(v) for v in value.values()]
    elif isinstance(value, list):
        kids = [_shape(v) for v in value]
    else:
        return 1, 0
    return 1 + sum(k[0] for k in kids), 1 + max((k[1] for k in kids), default=0)


def load_config(path: str | os.PathLike[str], cfg_options: Sequence[str] | None = None) -> dict[str, Any]:
    """Load a preset: ``_base_`` inheritance, overrides, ``$DET_DATASETS`` and schema checks.

    ``path`` is a file, or the name of a shipped preset (``quickstart`` or ``quickstart.yaml``).
    """
    resolved = resolve_preset_path(path)
    origins: dict[tuple[str | int, ...], Path] = {}
    cfg = _load_tree(resolved, (), origins)
    cfg = _strip_delete(cfg)
    if cfg_options:
        cfg = apply_overrides(cfg, cfg_options)
    cfg = substitute_vars(cfg, str(path), origins)
    check_schema(cfg, str(path))  # before re-rooting: it walks `data`, which must be a mapping
    from detcli.plugins import prepare

    prepare(cfg, str(path))  # custom_imports and det.plugins entry points, before anything is built
    return reroot_datasets(cfg, os.environ.get("DET_DATASETS"))


def load_fragment(path: str | os.PathLike[str], substitute: bool = True) -> dict[str, Any]:
    """Load a partial preset (a ``_base_`` fragment): bases merged and ``vars`` substituted (unless
    ``substitute`` is false: then ``vars`` and the references stay), no schema checks and no
    re-rooting (a fragment need not be a whole config)."""
    origins: dict[tuple[str | int, ...], Path] = {}
    cfg = _strip_delete(_load_tree(Path(path), (), origins))
    return substitute_vars(cfg, str(path), origins) if substitute else cfg


def resolve_preset_path(path: str | os.PathLike[str]) -> Path:
    """Return the file for ``path``: an existing file, or a preset shipped with det by name."""
    p = Path(path)
    if _path_too_long(str(path)):
        raise ConfigError(f"{_show(str(path))}: the path is too long for a preset file "
                          f"(at most {MAX_PATH_BYTES} bytes, {MAX_NAME_BYTES} per name)")
    try:
        if p.exists():
            return p
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
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
    return yaml.dump(_plain(cfg), Dumper=_PresetDumper, sort_keys=False, default_flow_style=None, width=100)
