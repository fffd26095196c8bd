"""Per-kind registries and the one function that turns ``{type: ...}`` config nodes into objects.

A preset is a tree of plain YAML values. Nodes of the form ``{type: Name, **kwargs}`` stand for
components. :func:`build` walks the tree once: a ``{type: ...}`` node found under a *component key*
(``backbone``, ``neck``, ``bbox_head``, ``loss_cls``, ``pipeline``, ...; see :data:`COMPONENT_KEYS`)
is built from the registry of that kind, children first, after its keys were checked against the
constructor's signature. ``{type: ...}`` nodes under other keys (``nms``, ``norm_cfg``,
``init_cfg``) are options read by their owner and stay plain dicts.

Example:
    >>> from detcli.registry import LOSSES, build
    >>> loss = build({"type": "FocalLoss", "gamma": 2.0}, LOSSES)   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from detcli.errors import ConfigError, RegistryError, did_you_mean

T = TypeVar("T")


class Registry:
    """Maps type names to classes (or factory functions) of one component kind.

    Args:
        kind: what the registry holds, in the singular ("backbone", "head", ...); used in errors.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, obj: T | None = None, *, name: str | None = None, force: bool = False) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``).

        Usable as ``@REG.register()``, ``@REG.register`` or ``@REG.register(name="Other")``, or called
        as ``REG.register(cls)``.

        Args:
            force: replace an entry of the same name instead of failing.

        Raises:
            RegistryError: ``name`` is taken by another class or function (both are named), and not ``force``.
        """

        def add(target: T) -> T:
            if not callable(target):
                raise RegistryError(f"cannot register {target!r} as a {self.kind}: not a class or function")
            key = name or target.__name__  # type: ignore[attr-defined]
            old = self._entries.get(key)
            if old is not None and old is not target and not force and not _same_definition(old, target):
                raise RegistryError(
                    f"{self.kind} '{key}' is already registered by {_qualname(old)}; cannot register "
                    f"{_qualname(target)} under the same name (pick another name=..., or pass force=True to replace it)"
                )
            self._entries[key] = target  # type: ignore[assignment]
            return target

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove the entry ``name`` (tests and plugins replacing their own entries); no error if absent."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Callable[..., Any]:
        """Return the entry called ``name``; an unknown name raises with a did-you-mean."""
        if name not in self._entries:
            from detcli.plugins import load_entry_points

            load_entry_points()  # installed plugins may provide it (loaded once per process)
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)} (known: {known})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __repr__(self) -> str:
        return f"Registry(kind={self.kind!r}, entries={self.names()})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"


def _same_definition(old: Any, new: Any) -> bool:
    """A module imported twice (``python -m pkg.mod`` and ``import pkg.mod``) re-registers its own classes."""
    return _qualname(old) == _qualname(new) and getattr(old, "__module__", None) not in (None, "__main__")


# The public registries. Users add components with ``@BACKBONES.register()`` etc. (docs/extending.md);
# the names follow mmdet 2.x (``PIPELINES`` is ``TRANSFORMS``, ``MODELS`` is ``DETECTORS``).
BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
DETECTORS = Registry("detector")
LOSSES = Registry("loss")
BOX_CODERS = Registry("box coder")
PRIOR_GENERATORS = Registry("prior generator")
MATCHERS = Registry("assigner")
SAMPLERS = Registry("sampler")
ROI_EXTRACTORS = Registry("RoI extractor")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
HOOKS = Registry("hook")

#: mmdet 2.x spellings of the same registries.
PIPELINES = TRANSFORMS
MODELS = DETECTORS
#: Every registry by its public name (``det config list``-style listings, docs).
REGISTRIES: dict[str, Registry] = {
    "BACKBONES": BACKBONES, "NECKS": NECKS, "HEADS": HEADS, "DETECTORS": DETECTORS, "LOSSES": LOSSES,
    "BBOX_CODERS": BOX_CODERS, "PRIOR_GENERATORS": PRIOR_GENERATORS, "BBOX_ASSIGNERS": MATCHERS,
    "BBOX_SAMPLERS": SAMPLERS, "ROI_EXTRACTORS": ROI_EXTRACTORS, "DATASETS": DATASETS, "PIPELINES": TRANSFORMS,
    "HOOKS": HOOKS,
}
#: mmdet 2.x names of the box coder / assigner / sampler registries.
BBOX_CODERS = BOX_CODERS
BBOX_ASSIGNERS = MATCHERS
BBOX_SAMPLERS = SAMPLERS

#: The config keys whose ``{type: ...}`` values are components, and the registry of each.
#: Every key starting with ``loss_`` is a loss as well.
COMPONENT_KEYS: dict[str, Registry] = {
    "model": DETECTORS,
    "backbone": BACKBONES,
    "neck": NECKS,
    "bbox_head": HEADS,
    "rpn_head": HEADS,
    "roi_head": HEADS,
    "mask_head": HEADS,
    "bbox_roi_extractor": ROI_EXTRACTORS,
    "mask_roi_extractor": ROI_EXTRACTORS,
    "anchor_generator": PRIOR_GENERATORS,
    "prior_generator": PRIOR_GENERATORS,
    "bbox_coder": BOX_CODERS,
    "assigner": MATCHERS,
    "sampler": SAMPLERS,
    "pipeline": TRANSFORMS,
    "transforms": TRANSFORMS,
    "dataset": DATASETS,
    "datasets": DATASETS,
    "custom_hooks": HOOKS,
}


def registry_for_key(key: str | None) -> Registry | None:
    """Return the registry for the config key ``key``, or None when its value is not a component."""
    if key is None:
        return None
    if key.startswith("loss_"):
        return LOSSES
    return COMPONENT_KEYS.get(key)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}.{key}" if path else str(key)
    return f"{path}.{key}" if path else key


def _check_value_type(value: Any, annotation: Any) -> bool:
    """Loose check of a YAML value against a constructor annotation (builtins only)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_check_value_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list) or annotation in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping) or annotation is dict:
        return isinstance(value, Mapping)
    return True  # classes, callables, tensors...: not checkable from YAML


def _signature(target: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    fn = target.__init__ if inspect.isclass(target) else target  # type: ignore[misc]
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: skip type checks
        hints = {}
    return sig, hints


def check_kwargs(target: Callable[..., Any], kwargs: Mapping[str, Any], path: str, given: set[str] | None = None) -> None:
    """Check ``kwargs`` against ``target``'s signature; raise :class:`ConfigError` naming ``path``.

    Args:
        given: names the caller will pass itself (they count as present, not as unknown).
    """
    sig, hints = _signature(target)
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    name = getattr(target, "__name__", str(target))
    given = given or set()
    if not accepts_var_kw:
        for key in kwargs:
            if key not in named:
                raise ConfigError(
                    f"{_join(path, key)}: unknown key '{key}' for {name}"
                    f"{did_you_mean(key, named)} (valid keys: {', '.join(sorted(named))})"
                )
    for n in named:
        p = params[n]
        if p.default is inspect.Parameter.empty and n not in kwargs and n not in given:
            raise ConfigError(f"{path or name}: {name} needs the key '{n}'")
    for key, value in kwargs.items():
        if key in hints and not isinstance(value, Mapping) and not _check_value_type(value, hints[key]):
            raise ConfigError(
                f"{_join(path, key)}: {value!r} is not a valid value for {name}.{key} "
                f"(expected {getattr(hints[key], '__name__', hints[key])})"
            )


def build(
    node: Mapping[str, Any],
    registry: Registry,
    *,
    path: str = "",
    dry_run: bool = False,
    **given: Any,
) -> Any:
    """Build the component described by ``node`` from ``registry``, children first.

    Args:
        node: ``{type: Name, **kwargs}``.
        registry: where ``Name`` is looked up.
        path: the node's dotted key path in the config, used in error messages.
        dry_run: only validate the whole subtree (types, keys, value types); build nothing, return None.
        **given: keyword arguments the caller supplies (for example ``num_classes``); a key the
            node sets itself wins.

    Raises:
        ConfigError: unknown type, unknown or missing key, or a value of the wrong type, naming
            the key path and the closest valid names.
    """
    if not isinstance(node, Mapping) or "type" not in node:
        raise ConfigError(f"{path or '<root>'}: expected a mapping with a 'type' key, got {node!r}")
    type_name = node["type"]
    try:
        target = registry.get(type_name)
    except ConfigError as e:
        raise ConfigError(f"{_join(path, 'type')}: {e}") from None
    kwargs = {k: _build_value(v, k, _join(path, k), dry_run) for k, v in node.items() if k != "type"}
    check_kwargs(target, kwargs, path or type_name, given=set(given))
    if dry_run:
        return None
    merged = {**given, **kwargs}
    try:
        return target(**merged)
    except ConfigError as e:
        raise ConfigError(f"{path or type_name}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or type_name}: invalid arguments for {type_name}: {e}") from e


def _build_value(value: Any, key: str | int | None, path: str, dry_run: bool) -> Any:
    registry = registry_for_key(key) if isinstance(key, str) else None
    if isinstance(value, Mapping):
        if registry is not None and "type" in value:
            return build(value, registry, path=path, dry_run=dry_run)
        return {k: _build_value(v, k, _join(path, k), dry_run) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [
            _build_value(v, key, _join(path, i), dry_run)
            if isinstance(v, Mapping) and registry is not None
            else _build_value(v, None, _join(path, i), dry_run)
            for i, v in enumerate(value)
        ]
        return items if isinstance(value, list) else tuple(items)
    return value
