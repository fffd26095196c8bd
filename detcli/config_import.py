"""Translate an MMDetection 2.x Python config into one det YAML preset, without running it.

``det config import CONFIG.py`` calls :func:`import_mmdet_config`. The config and every file of its
``_base_`` chain are parsed with :mod:`ast` and *evaluated* by a small interpreter that knows only:

* literals (strings, numbers, ``True``/``False``/``None``), lists, tuples (they become lists),
  ``{...}`` mappings with string keys (``{**a, 'k': v}`` too) and ``dict(k=v, **a)``;
* names assigned earlier in the same file or in its bases (mmcv's ``{{_base_.name}}`` as well);
* arithmetic ``+ - * / // % **`` and unary ``-``/``+`` on numbers, ``+`` on strings and lists
  (and ``*`` by an integer), a subscript by a constant (``img_scale[0]``), f-strings whose
  fields are such expressions;
* module statements that are assignments to plain names (``a = b = ...``, ``a += ...``), and
  docstrings.

Anything else (any other call such as ``open(...)`` or ``__import__('os')``, attribute access,
imports, lambdas, comprehensions, conditionals, loops, function or class definitions) is refused
with a :class:`~detcli.errors.ConfigError` naming ``FILE:LINE`` and the construct; nothing of the
file is ever executed.

The files merge as mmcv's ``Config`` merges them: the bases in order (a key defined by two bases
is an error), then the file on top; mappings merge key by key, a mapping with ``_delete_=True``
replaces what it overrides, lists and other values replace. Of the resulting top-level names,
those that det's schema knows (:data:`detcli.config.TOP_LEVEL_KEYS`) make the preset; names that
some file of the chain refers to (``img_norm_cfg``, ``train_pipeline``, ``dataset_type``,
``data_root``...) are intermediate variables, already resolved into the values that used them, and
are dropped; :data:`DROPPED_KEYS` are dropped with a note; any other name is an unknown key.

mmdet 2.x conventions are carried over: a top-level ``train_cfg``/``test_cfg`` moves into
``model`` (as mmdet's ``build_detector`` does), and dataset paths written as ``data_root +
'annotations/...'`` get their ``data_root`` back as a key with paths relative to it (det's form,
so ``$DET_DATASETS`` re-roots them).

The translated tree is then checked: :func:`find_problems` lists *every* component whose ``type``
det does not register and every unknown key, each with the nearest det name. Finally the preset is
written with ``_base_`` onto det's shipped fragments (``presets/_base_/...``) when that makes it
shorter and resolves to exactly the same values, and only the difference below; else flattened.
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import math
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.config import (
    MAX_BASE_DEPTH,
    MAX_NESTING,
    MAX_PRESET_BYTES,
    SECTION_KEYS,
    SHIPPED_BASE_DIR,
    TOP_LEVEL_KEYS,
    VALUE_TYPES,
    VARS_KEY,
    dump_config,
    is_int,
    merge,
    substitute_vars,
)
from detcli.errors import ConfigError, did_you_mean
from detcli.registry import DATASETS, Registry, registry_for_key

#: mmdet runtime keys with no counterpart in det, dropped with a note: det keeps the process
#: defaults (OpenCV's own thread count; the platform's multiprocessing start method, fork on Linux).
DROPPED_KEYS: dict[str, str] = {
    "opencv_num_threads": "det leaves OpenCV's thread count at its default",
    "mp_start_method": "det uses the platform's default start method (fork on Linux)",
}

#: The names mmdet 2.x configs conventionally give intermediate variables. A file that assigns one
#: and never uses it (a printed, fully inlined config) loses it with a note, not a problem.
CONVENTIONAL_VARIABLES = frozenset({
    "dataset_type", "data_root", "img_norm_cfg", "train_pipeline", "test_pipeline", "val_pipeline", "img_scale",
    "classes", "norm_cfg", "pretrained", "file_client_args", "train_dataset", "albu_train_transforms",
    "max_epochs", "num_last_epochs", "interval", "checkpoint",
})

_WHOLE_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Largest integer (in bits) and longest string or list an imported expression may produce.
MAX_INT_BITS = 4096
MAX_SEQUENCE = 100_000
#: Most values (list items, mapping entries, scalars) one expression may produce, and that the name
#: references of one file may copy in all (against ``a = [[0] * 9999] * 9999``-style bombs).
MAX_VALUES = 100_000
MAX_COPIED = 2_000_000

_ALLOWED_CALL = "dict"

_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "a lambda",
    ast.ListComp: "a list comprehension",
    ast.SetComp: "a set comprehension",
    ast.DictComp: "a dict comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.IfExp: "a conditional expression",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operation",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.NamedExpr: "an assignment expression (:=)",
    ast.Starred: "a starred expression",
    ast.Set: "a set",
    ast.Slice: "a slice",
    ast.Import: "an import",
    ast.ImportFrom: "an import",
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.ClassDef: "a class definition",
    ast.For: "a loop",
    ast.AsyncFor: "a loop",
    ast.While: "a loop",
    ast.If: "an if statement",
    ast.With: "a with statement",
    ast.AsyncWith: "a with statement",
    ast.Try: "a try statement",
    ast.Raise: "a raise statement",
    ast.Assert: "an assert statement",
    ast.Delete: "a del statement",
    ast.Global: "a global statement",
    ast.Nonlocal: "a nonlocal statement",
    ast.Return: "a return statement",
}


def _describe(node: ast.AST) -> str:
    """What ``node`` is, for an error message (never evaluates anything)."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return f"a call to '{func.id}' (only dict(...) is allowed)"
        if isinstance(func, ast.Attribute):
            return f"a call to '...{func.attr}' (attribute access and calls other than dict(...) are not allowed)"
        return "a call (only dict(...) is allowed)"
    if isinstance(node, ast.Attribute):
        return f"attribute access '.{node.attr}'"
    if isinstance(node, ast.Expr):
        return f"an expression statement ({_describe(node.value)})"
    for kind, text in _CONSTRUCTS.items():
        if isinstance(node, kind):
            return text
    return f"'{type(node).__name__}'"


@dataclass
class _Module:
    """One evaluated config file: its top-level names in order, and the names it refers to."""

    path: Path
    values: dict[str, Any]
    referenced: set[str]


class _Evaluator:
    """Evaluates the expressions of one config file (see the module docstring for what is allowed)."""

    def __init__(self, path: Path, base: Mapping[str, Any]) -> None:
        self.path = path
        self.base = base  # the merged names of the bases (also reachable as {{_base_.name}})
        self.names: dict[str, Any] = {}
        self.referenced: set[str] = set()
        self.copied = 0

    def error(self, node: ast.AST, message: str) -> ConfigError:
        return ConfigError(f"{self.path}:{getattr(node, 'lineno', '?')}: {message}; "
                           "det config import evaluates literals, dict(...), names and arithmetic only "
                           "(the file is never run)")

    def refuse(self, node: ast.AST) -> ConfigError:
        return self.error(node, f"{_describe(node)} is not allowed")

    def lookup(self, node: ast.AST, name: str) -> Any:
        self.referenced.add(name)
        if name in self.names:
            return self.names[name]
        if name in self.base:
            return self.base[name]
        raise self.error(node, f"name '{name}' is not defined (a config may use names assigned earlier in it or "
                               "in its _base_ files)")

    def run(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign):
                value = self.eval(stmt.value)
                for target in stmt.targets:
                    if not isinstance(target, ast.Name):
                        raise self.error(target, "only assignments to plain names are allowed "
                                                 f"({_describe(target)} as a target)")
                    self.names[target.id] = copy.deepcopy(value)
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                self.names[stmt.target.id] = self.eval(stmt.value)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                current = self.lookup(stmt.target, stmt.target.id)
                self.names[stmt.target.id] = self.binop(stmt, stmt.op, current, self.eval(stmt.value))
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                continue  # a docstring
            elif isinstance(stmt, ast.Pass):
                continue
            else:
                raise self.refuse(stmt)

    # --- expressions ---------------------------------------------------------------------------

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (str, int, float, bool)) or node.value is None:
                return self.checked(node, node.value)
            raise self.error(node, f"a {type(node.value).__name__} constant is not allowed")
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.eval(e) for e in node.elts]
            return self.checked(node, items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.Dict):
            out: dict[str, Any] = {}
            for key, value in zip(node.keys, node.values):
                if key is None:  # {**a}
                    out.update(self.mapping(value, self.eval(value), "**"))
                else:
                    k = self.eval(key)
                    if not isinstance(k, str):
                        raise self.error(key, f"a mapping key must be a string, got {type(k).__name__}")
                    out[k] = self.eval(value)
            return self.checked(node, out)
        if isinstance(node, ast.Name):
            found = self.lookup(node, node.id)
            self.copied += _count(found, MAX_COPIED)
            if self.copied > MAX_COPIED:
                raise self.error(node, f"the names used copy more than {MAX_COPIED} values in all (det's limit)")
            return copy.deepcopy(found)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node, node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            if isinstance(node.op, (ast.USub, ast.UAdd)) and _is_number(operand):
                return -operand if isinstance(node.op, ast.USub) else +operand
            raise self.error(node, f"unary {type(node.op).__name__} on {type(operand).__name__} is not allowed")
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.JoinedStr):
            return self.fstring(node)
        if isinstance(node, ast.Set):
            return self.base_reference(node)
        raise self.refuse(node)

    def mapping(self, node: ast.AST, value: Any, how: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(node, f"{how} needs a mapping, got {type(value).__name__}")
        return value

    def call(self, node: ast.Call) -> Any:
        if not (isinstance(node.func, ast.Name) and node.func.id == _ALLOWED_CALL):
            raise self.refuse(node)
        if _ALLOWED_CALL in self.names or _ALLOWED_CALL in self.base:
            raise self.error(node, f"a call to '{_ALLOWED_CALL}', which this config rebinds to a value")
        if node.args:
            raise self.error(node, "dict(...) takes keyword arguments only (dict(a=1, **b))")
        out: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                out.update(self.mapping(kw.value, self.eval(kw.value), "dict(**...)"))
            else:
                out[kw.arg] = self.eval(kw.value)
        return out

    def binop(self, node: ast.AST, op: ast.operator, left: Any, right: Any) -> Any:
        name = type(op).__name__
        try:
            if _is_number(left) and _is_number(right):
                if isinstance(op, ast.Pow) and is_int(right) and (
                    abs(right) > 1024 or (is_int(left) and left.bit_length() * abs(right) > MAX_INT_BITS)
                ):
                    raise self.error(node, f"exponent {right} is too large")
                ops: dict[type, Callable[[Any, Any], Any]] = {
                    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
                    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
                    ast.Pow: lambda a, b: a ** b,
                }
                if type(op) in ops:
                    return self.checked(node, ops[type(op)](left, right))
            elif isinstance(op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple)):
                joined: Any = left
                return self.checked(node, joined + right)
            elif isinstance(op, ast.Mult) and isinstance(left, (str, list, tuple)) and is_int(right):
                if len(left) * max(right, 0) > MAX_SEQUENCE:
                    raise self.error(node, f"the result would be longer than {MAX_SEQUENCE}")
                return self.checked(node, left * right)
        except (ArithmeticError, ValueError) as e:
            raise self.error(node, f"{name}: {e}") from None
        raise self.error(node, f"{name} of {type(left).__name__} and {type(right).__name__} is not allowed")

    def checked(self, node: ast.AST, value: Any) -> Any:
        if is_int(value) and value.bit_length() > MAX_INT_BITS:
            raise self.error(node, f"an integer of more than {MAX_INT_BITS} bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(node, f"the number {value} is not finite")
        if isinstance(value, (str, list, tuple)) and len(value) > MAX_SEQUENCE:
            raise self.error(node, f"a value longer than {MAX_SEQUENCE}")
        if isinstance(value, (list, tuple, dict)):
            count, depth = _measure(value, MAX_VALUES)
            if count > MAX_VALUES:
                raise self.error(node, f"a value holding more than {MAX_VALUES} values (det's limit)")
            if depth > MAX_NESTING:
                raise self.error(node, f"lists and mappings nested deeper than {MAX_NESTING} levels (det's limit)")
        return value

    def subscript(self, node: ast.Subscript) -> Any:
        index_node = node.slice
        if not isinstance(index_node, (ast.Constant, ast.UnaryOp, ast.Name, ast.BinOp)):
            raise self.error(node, f"a subscript by {_describe(index_node)} is not allowed (only a constant index)")
        container = self.eval(node.value)
        index = self.eval(index_node)
        try:
            if isinstance(container, (list, tuple, str)) and is_int(index):
                return copy.deepcopy(container[index])
            if isinstance(container, dict) and isinstance(index, str):
                return copy.deepcopy(container[index])
        except (IndexError, KeyError):
            raise self.error(node, f"index {index!r} not found in {type(container).__name__}") from None
        raise self.error(node, f"a subscript of {type(container).__name__} by {type(index).__name__} is not allowed")

    def fstring(self, node: ast.JoinedStr) -> str:
        parts: list[str] = []
        for piece in node.values:
            if isinstance(piece, ast.Constant):
                parts.append(str(piece.value))
            elif isinstance(piece, ast.FormattedValue):
                if piece.conversion != -1 or piece.format_spec is not None:
                    raise self.error(piece, "f-string conversions and format specs are not allowed")
                value = self.eval(piece.value)
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise self.error(piece, f"an f-string field holds a {type(value).__name__}")
                parts.append(str(value))
            else:
                raise self.refuse(piece)
        return self.checked(node, "".join(parts))

    def base_reference(self, node: ast.Set) -> Any:
        """mmcv's ``{{_base_.a.b}}``: the value ``a.b`` of the merged bases."""
        inner = node.elts[0] if len(node.elts) == 1 else None
        ref = inner.elts[0] if isinstance(inner, ast.Set) and len(inner.elts) == 1 else None
        chain: list[str] = []
        while isinstance(ref, ast.Attribute):
            chain.append(ref.attr)
            ref = ref.value
        if not (isinstance(ref, ast.Name) and ref.id == "_base_" and chain):
            raise self.refuse(node)
        value: Any = self.base
        for key in reversed(chain):
            if not isinstance(value, dict) or key not in value:
                raise self.error(node, f"{{{{_base_.{'.'.join(reversed(chain))}}}}}: '{key}' is not in the bases")
            value = value[key]
        self.referenced.add(chain[-1])
        return copy.deepcopy(value)


def _count(value: Any, limit: int) -> int:
    """The number of values in ``value`` (shared sub-lists counted each time), stopping past ``limit``."""
    return _measure(value, limit)[0]


def _measure(value: Any, limit: int) -> tuple[int, int]:
    """``(values, nesting depth)`` of ``value``, stopping once more than ``limit`` values were seen."""
    count = 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and count <= limit:
        item, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return count, deepest


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- reading the chain --------------------------------------------------------------------------

def _read_source(path: Path) -> str:
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file" if not path.exists() else f"{path}: not a regular file")
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_PRESET_BYTES} bytes (det's limit for a config)")
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {e.start})") from None


def _base_file(path: Path, base: str, mmdet_root: Path | None, lineno: int) -> Path:
    candidate = Path(base) if Path(base).is_absolute() else path.parent / base
    if candidate.is_file():
        return candidate
    tried = [str(candidate)]
    if mmdet_root is not None and not Path(base).is_absolute():
        # `../_base_/models/x.py` (from configs/<family>/) or `_base_/...` (from configs/)
        rel = Path(*[p for p in Path(base).parts if p not in ("..", ".")])
        for root in (mmdet_root / "configs", mmdet_root):
            alt = root / rel
            if alt.is_file():
                return alt
            tried.append(str(alt))
    hint = "" if mmdet_root is not None else "; give --mmdet-root DIR (an mmdet checkout) to look in its configs/"
    raise ConfigError(f"{path}:{lineno}: _base_ file '{base}' not found (looked at {', '.join(tried)}){hint}")


def _load_module(path: Path, mmdet_root: Path | None, chain: tuple[Path, ...], text: str | None = None) -> _Module:
    """Evaluate ``path`` and its bases; the result holds the merged names (bases, then the file)."""
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{chain[0]}: _base_ chain deeper than {MAX_BASE_DEPTH} files (det's limit), at {path}")
    key = path.resolve() if text is None else path
    if key in chain:
        raise ConfigError(f"{path}: _base_ inheritance cycle: {' -> '.join(map(str, (*chain, key)))}")
    source = _read_source(path) if text is None else text
    try:
        with warnings.catch_warnings():  # the compiler's SyntaxWarnings ("invalid escape sequence"): not ours
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source, filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: Python syntax error: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ConfigError(f"{path}: cannot be parsed: {type(e).__name__}") from None
    # the _base_ statement is evaluated first, on its own (it may only hold strings)
    base_value: Any = None
    base_line = 1
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in stmt.targets):
            base_value = _Evaluator(path, {}).eval(stmt.value)
            base_line = stmt.lineno
    bases: list[str]
    if base_value is None:
        bases = []
    elif isinstance(base_value, str):
        bases = [base_value]
    elif isinstance(base_value, (list, tuple)) and all(isinstance(b, str) for b in base_value):
        bases = list(base_value)
    else:
        raise ConfigError(f"{path}:{base_line}: _base_ must be a path or a list of paths")
    merged: dict[str, Any] = {}
    owner: dict[str, Path] = {}
    referenced: set[str] = set()
    for base in bases:
        child = _load_module(_base_file(path, base, mmdet_root, base_line), mmdet_root, (*chain, key))
        for name in child.values:
            if name in owner:
                raise ConfigError(f"{path}:{base_line}: key '{name}' is defined by two bases ({owner[name]} and "
                                  f"{child.path}); mmdet refuses duplicate keys among bases")
            owner[name] = child.path
        merged.update(child.values)
        referenced |= child.referenced
    evaluator = _Evaluator(path, merged)
    try:
        evaluator.run(tree)
    except RecursionError:
        raise ConfigError(f"{path}: expressions nested too deeply") from None
    own = {k: v for k, v in evaluator.names.items() if k != "_base_" and not k.startswith("__")}
    return _Module(path, merge(merged, own), referenced | evaluator.referenced)


# --- translation --------------------------------------------------------------------------------

@dataclass
class ImportResult:
    """What :func:`import_mmdet_config` produced.

    Attributes:
        config: the translated config, fully resolved (what det would load).
        text: the preset YAML (``_base_`` onto shipped fragments when that is shorter).
        bases: the shipped fragments used as ``_base_``.
        problems: every component det does not have and every unknown key, with the nearest det
            name; empty when det can run the config as translated.
        notes: what the translation changed or dropped on purpose.
    """

    config: dict[str, Any]
    text: str
    bases: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def import_mmdet_config(
    path: str | Path,
    *,
    mmdet_root: str | Path | None = None,
    text: str | None = None,
    validate: Callable[[dict[str, Any], str], object] | None = None,
    fragments: Mapping[str, Mapping[str, Any]] | None = None,
) -> ImportResult:
    """Translate the mmdet 2.x config ``path`` (and its ``_base_`` chain) into a det preset.

    Args:
        path: the config file (with ``text``: the name to report, bases resolve against its folder).
        mmdet_root: an mmdet checkout; ``_base_`` paths not found next to a file are looked up in its
            ``configs/``.
        text: the config's source, read from somewhere else (stdin).
        validate: a further check of the translated config (det's full validation, which needs the
            component modules loaded); its :class:`ConfigError` becomes a problem. Only run when the
            registry walk found nothing.
        fragments: the ``_base_`` candidates by name (default: det's shipped ``presets/_base_``).

    The registries must hold det's components (import ``detcli.models`` and ``detcli.data`` first)
    for :attr:`ImportResult.problems` to be meaningful.

    Raises:
        ConfigError: the file cannot be read or parsed, or holds a construct the importer refuses
            (``FILE:LINE: ... is not allowed``).
    """
    path = Path(path)
    if text is not None and len(text.encode("utf-8", "surrogatepass")) > MAX_PRESET_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_PRESET_BYTES} bytes (det's limit for a config)")
    root = Path(mmdet_root) if mmdet_root is not None else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"--mmdet-root {root}: not a directory")
    module = _load_module(path, root, (), text)
    notes: list[str] = []
    problems: list[str] = []
    cfg = _select_keys(module, problems, notes)
    _move_legacy_cfgs(cfg, notes, problems)
    _restore_data_root(cfg, module.values.get("data_root"), notes)
    cfg = _plain(cfg)
    problems.extend(find_problems(cfg))
    if not problems and validate is not None:
        try:
            validate(copy.deepcopy(cfg), str(path))
        except ConfigError as e:
            problems.append(str(e))
    chosen, body = choose_bases(cfg, fragments if fragments is not None else shipped_fragments())
    header = [f"# Imported from {path.name} (MMDetection 2.x) by `det config import`; every value resolved,",
              "# intermediate variables (img_norm_cfg, train_pipeline, ...) inlined."]
    out: dict[str, Any] = {}
    if chosen:
        out["_base_"] = chosen
    out.update(body)
    return ImportResult(cfg, "\n".join(header) + "\n" + dump_config(out), chosen, problems, notes)


def _select_keys(module: _Module, problems: list[str], notes: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    known = TOP_LEVEL_KEYS | {"train_cfg", "test_cfg"}
    for name, value in module.values.items():
        if name in known:
            cfg[name] = value
        elif name in DROPPED_KEYS:
            notes.append(f"dropped {name} = {value!r}: {DROPPED_KEYS[name]}")
        elif name in module.referenced:
            continue  # an intermediate variable, already inlined where it was used
        elif name in CONVENTIONAL_VARIABLES:
            notes.append(f"dropped the variable {name}: no file of the config uses it")
        else:
            problems.append(f"{name}: unknown top-level key{did_you_mean(name, TOP_LEVEL_KEYS)} "
                            "(not a det config key, and no file of the config refers to it as a variable)")
    return cfg


def _move_legacy_cfgs(cfg: dict[str, Any], notes: list[str], problems: list[str]) -> None:
    """mmdet 2.x still reads a top-level ``train_cfg``/``test_cfg`` into the model, and a detector's
    ``pretrained`` into its backbone's ``init_cfg``."""
    model = cfg.get("model")
    if isinstance(model, dict) and "pretrained" in model:
        checkpoint = model.pop("pretrained")
        backbone = model.get("backbone")
        if checkpoint is None:
            notes.append("dropped model.pretrained = None")
        elif isinstance(backbone, dict) and "init_cfg" not in backbone and backbone.get("pretrained") is None:
            backbone.pop("pretrained", None)
            backbone["init_cfg"] = {"type": "Pretrained", "checkpoint": checkpoint}
            notes.append("moved model.pretrained into model.backbone.init_cfg (as mmdet 2.x's detectors do)")
        else:
            problems.append("model.pretrained: the backbone sets its own init_cfg or pretrained too "
                            "(mmdet refuses both); keep one, as model.backbone.init_cfg")
    for key in ("train_cfg", "test_cfg"):
        if key in cfg:
            value = cfg.pop(key)
            if isinstance(model, dict) and key not in model:
                model[key] = value
                notes.append(f"moved the top-level {key} into model.{key} (as mmdet's build_detector does)")
            elif isinstance(model, dict):
                notes.append(f"dropped the top-level {key}: model.{key} is set (mmdet uses the model's)")


def _restore_data_root(cfg: dict[str, Any], data_root: Any, notes: list[str]) -> None:
    """``ann_file=data_root + 'x'`` becomes ``data_root: ..., ann_file: x`` in every dataset node."""
    if not isinstance(data_root, str) or not data_root:
        return
    moved = 0

    def visit(node: Any) -> None:
        nonlocal moved
        if isinstance(node, dict):
            if "type" in node and "data_root" not in node:
                paths = [(k, node[k]) for k in ("ann_file", "img_prefix", "seg_prefix") if k in node]
                values = [v for _, v in paths]
                if paths and all(isinstance(v, str) and v.startswith(data_root) for v in values):
                    rebuilt = {"type": node["type"], "data_root": data_root}
                    for k, v in node.items():
                        if k != "type":
                            rebuilt[k] = v[len(data_root):] if k in dict(paths) else v
                    node.clear()
                    node.update(rebuilt)
                    moved += 1
            for v in node.values():
                visit(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                visit(v)

    data = cfg.get("data")
    if isinstance(data, dict):
        for split in ("train", "val", "test"):
            visit(data.get(split))
    if moved:
        notes.append(f"{moved} dataset(s): data_root '{data_root}' kept as a key, ann_file/img_prefix made relative "
                     "to it (det's form; $DET_DATASETS re-roots it)")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- checking against det's registries ----------------------------------------------------------

def _accepted_keys(target: Callable[..., Any]) -> set[str] | None:
    """The keyword names ``target`` takes (None: it takes any, ``**kwargs``)."""
    fn = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL}


def _nearest(name: str, registry: Registry) -> str:
    """A did-you-mean, else the det component sharing the longest name ending (``DoubleHeadRoIHead``:
    ``StandardRoIHead``), and the list of det's components of that kind."""
    names = registry.names()
    hint = did_you_mean(name, names)
    if hint:
        return hint
    short = name.rsplit(".", 1)[-1]  # `mmcls.MobileNetV3`: the class name

    def shared_ending(candidate: str) -> int:
        n = 0
        while n < min(len(short), len(candidate)) and short[-1 - n] == candidate[-1 - n]:
            n += 1
        return n

    ranked = sorted(names, key=lambda c: (-shared_ending(c), -difflib.SequenceMatcher(None, short, c).ratio(), c))
    listing = f" (det's {registry.kind}s: {', '.join(names) or 'none'})"
    if ranked and shared_ending(ranked[0]) >= 4:
        return f" — nearest det {registry.kind}: '{ranked[0]}'{listing}"
    return listing


def find_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Every component of ``cfg`` det does not register and every unknown key, with the nearest det name.

    Walks the tree as :func:`detcli.registry.build` would: a ``{type: ...}`` under a component key
    (and the datasets of ``data.train/val/test``) must name a registered component and use only
    keys its constructor takes; the top-level keys and those of the untyped sections must be in
    det's schema. Options without a registry (``nms``, ``norm_cfg``...) are left to det's own
    validation.
    """
    problems: list[str] = []
    for key, value in cfg.items():
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"{key}: unknown top-level key{did_you_mean(key, TOP_LEVEL_KEYS)}")
            continue
        allowed = SECTION_KEYS.get(key)
        if allowed is not None and isinstance(value, Mapping):
            for sub in value:
                if sub not in allowed:
                    problems.append(f"{key}.{sub}: unknown key{did_you_mean(sub, allowed)} "
                                    f"(det's {key} keys: {', '.join(sorted(allowed))})")
    data = cfg.get("data")
    for key, value in cfg.items():
        if key == "data" and isinstance(data, Mapping):
            for split, node in data.items():
                registry = DATASETS if split in ("train", "val", "test") else None
                if registry is not None and isinstance(node, Mapping):
                    # a split's own loader keys (samples_per_gpu...) are read by det's loader, not the dataset
                    loader = {path.split(".")[2] for path in VALUE_TYPES if path.startswith(f"data.{split}.")}
                    node = {k: v for k, v in node.items() if k not in loader}
                _walk(node, registry, f"data.{split}", problems)
        elif key in TOP_LEVEL_KEYS:
            _walk(value, registry_for_key(key), key, problems)
    return problems


def _walk(value: Any, registry: Registry | None, path: str, problems: list[str]) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, registry, f"{path}.{i}", problems)
        return
    if not isinstance(value, Mapping):
        return
    if registry is not None and "type" in value:
        name = value["type"]
        if not isinstance(name, str) or name not in registry:
            problems.append(f"{path}.type: det has no {registry.kind} {name!r}{_nearest(str(name), registry)}")
        else:
            accepted = _accepted_keys(registry.get(name))
            if accepted is not None:
                for key in value:
                    if key != "type" and key not in accepted:
                        problems.append(f"{path}.{key}: {name} has no key '{key}'{did_you_mean(key, accepted)} "
                                        f"(its keys: {', '.join(sorted(accepted))})")
    for key, sub in value.items():
        if key == "type":
            continue
        _walk(sub, registry_for_key(str(key)), f"{path}.{key}", problems)


# --- _base_ onto det's shipped fragments --------------------------------------------------------

def shipped_fragments() -> dict[str, dict[str, Any]]:
    """det's shipped ``presets/_base_`` fragments by their ``_base_`` path: bases merged, ``vars`` kept
    unsubstituted (see :func:`choose_bases`)."""
    from detcli.config import load_fragment
    from detcli.resources import presets_dir

    root = presets_dir()
    if root is None or not (root / SHIPPED_BASE_DIR).is_dir():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for file in sorted((root / SHIPPED_BASE_DIR).rglob("*.yaml")):
        name = file.relative_to(root).as_posix()
        try:
            out[name] = load_fragment(file, substitute=False)
        except ConfigError:
            continue
    return out


_CATEGORY_ORDER = ("models", "datasets", "schedules")


def _category(name: str) -> str:
    parts = name.split("/")
    return parts[1] if len(parts) > 2 else parts[-1]


def _size(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (``1 != 1.0 != True`` here, unlike ``==``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Mapping):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


class _NeedsDelete(Exception):
    pass


def difference(base: Mapping[str, Any], target: Mapping[str, Any], *, top: bool = True) -> dict[str, Any]:
    """The smallest child ``c`` with ``merge(base, c) == target`` (``_delete_`` where keys must go).

    Raises:
        ValueError: ``base`` has a top-level key that ``target`` lacks (a preset cannot remove one).
    """
    out: dict[str, Any] = {}
    for key, value in target.items():
        if key not in base:
            out[key] = copy.deepcopy(value)
        elif same(base[key], value):
            continue
        elif isinstance(value, Mapping) and isinstance(base[key], Mapping):
            try:
                out[key] = difference(base[key], value, top=False)
            except _NeedsDelete:
                out[key] = {"_delete_": True, **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    if any(key not in target for key in base):
        if top:
            raise ValueError("the base has keys the target lacks")
        raise _NeedsDelete
    return out


def _strip_markers(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_markers(v) for k, v in value.items() if k != "_delete_"}
    if isinstance(value, list):
        return [_strip_markers(v) for v in value]
    return value


def _fit_vars(raw: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Values for ``raw``'s ``vars`` read off ``target`` where ``raw`` holds exactly ``${name}``.

    A variable is fitted when every such place agrees on one value that differs from its default.
    """
    variables = raw.get(VARS_KEY)
    if not isinstance(variables, Mapping) or not variables:
        return {}
    proposals: dict[str, list[Any]] = {}

    def walk(r: Any, t: Any) -> None:
        if isinstance(r, str):
            m = _WHOLE_REFERENCE.fullmatch(r)
            if m is not None and m.group(1) in variables:
                proposals.setdefault(m.group(1), []).append(t)
        elif isinstance(r, Mapping) and isinstance(t, Mapping):
            for k in r:
                if k in t:
                    walk(r[k], t[k])
        elif isinstance(r, list) and isinstance(t, list) and len(r) == len(t):
            for a, b in zip(r, t):
                walk(a, b)

    walk({k: v for k, v in raw.items() if k != VARS_KEY}, target)
    return {name: values[0] for name, values in proposals.items()
            if all(same(values[0], v) for v in values[1:]) and not same(values[0], variables[name])}


def _escape_references(value: Any) -> Any:
    """Literal ``${`` in a value written into a preset becomes ``$${`` (else det would substitute it)."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, Mapping):
        return {k: _escape_references(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_references(v) for v in value]
    return value


def _resolves_to(raw_base: Mapping[str, Any], body: Mapping[str, Any], cfg: Mapping[str, Any]) -> bool:
    """Whether a preset ``body`` on the (unsubstituted) bases ``raw_base`` loads to exactly ``cfg``."""
    try:
        loaded = substitute_vars(_strip_markers(merge(raw_base, body)))
    except ConfigError:
        return False
    return same(loaded, dict(cfg))


def choose_bases(cfg: Mapping[str, Any], fragments: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Pick, per kind (models, datasets, schedules, default_runtime), the fragment that makes the
    preset shortest while it still resolves to ``cfg`` exactly; return ``(bases, preset body)``.

    ``fragments`` are unsubstituted (a fragment's ``vars`` kept): where ``cfg`` differs from a
    fragment only in what its variables fill in, the body sets those variables
    (``vars: {img_scale: [640, 640]}``) instead of restating the values.
    """
    chosen: list[str] = []
    merged: dict[str, Any] = {}
    best: dict[str, Any] = _escape_references(dict(cfg))
    best_size = _size(best)
    kinds = sorted({_category(n) for n in fragments},
                   key=lambda c: (_CATEGORY_ORDER.index(c) if c in _CATEGORY_ORDER else len(_CATEGORY_ORDER), c))
    for kind in kinds:
        pick: tuple[str, dict[str, Any], dict[str, Any], int] | None = None
        for name, fragment in fragments.items():
            if _category(name) != kind:
                continue
            trial = merge(merged, fragment)
            fitted = _fit_vars(trial, cfg)
            for overrides in ([fitted, {}] if fitted else [{}]):
                body: dict[str, Any] = {VARS_KEY: overrides} if overrides else {}
                try:
                    resolved = substitute_vars(merge(trial, body))
                    body.update(_escape_references(difference(resolved, cfg)))
                except (ValueError, ConfigError):
                    continue
                if not _resolves_to(trial, body, cfg):
                    continue
                size = _size(body) + 1
                if size < best_size and (pick is None or size < pick[3]):
                    pick = (name, trial, body, size)
        if pick is not None:
            chosen.append(pick[0])
            merged, best, best_size = pick[1], pick[2], pick[3]
    return chosen, best


def summarize(problems: Iterable[str]) -> str:
    """One message listing every problem (for a :class:`ConfigError`)."""
    items = list(problems)
    return f"{len(items)} part(s) of the config det cannot run as written:\n" + "\n".join(f"  - {p}" for p in items)
