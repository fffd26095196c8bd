"""Extending det without editing it: ``custom_imports`` and the ``det.plugins`` entry-point group.

User code adds components by registering them with the public registries of
:mod:`detcli.registry` (``@HEADS.register()``, ``@HOOKS.register()``, ...). det finds that code
in two ways, both before anything is built from a config:

- ``custom_imports: {imports: [my_pkg.my_head, ...], allow_failed_imports: false}`` in a config
  (mmdet 2.x's key): the modules are imported when the config is loaded (:func:`prepare`, called by
  :func:`detcli.config.load_config` and for configs read from checkpoints). They are looked up on
  ``sys.path`` (``PYTHONPATH``), then in the current directory. A module that fails to import is a
  :class:`~detcli.errors.PluginError` naming it and the key, or, with ``allow_failed_imports: true``,
  a warning.
- Installed distributions declare entry points in the group ``det.plugins``
  (``[project.entry-points."det.plugins"] my_plugin = "my_pkg.det_plugin"``). Each is loaded once per
  process, before the first config is loaded or the first unknown name is looked up in a registry.
  A module entry point registers on import; a function entry point is called with no arguments.
  A failing entry point is a :class:`~detcli.errors.PluginError` naming the distribution.

Example:
    >>> from detcli.plugins import import_custom_modules
    >>> import_custom_modules({"imports": ["json"]}, "my.yaml")
    ['json']
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from detcli.errors import PluginError

logger = logging.getLogger(__name__)

#: The entry-point group det loads plugins from.
ENTRY_POINT_GROUP = "det.plugins"
CUSTOM_IMPORTS_KEYS = frozenset({"imports", "allow_failed_imports"})

_lock = threading.RLock()  # reentrant: a plugin may look a name up while it is being loaded
_entry_points_loaded = False
#: ``(distribution, entry point name)`` of every plugin loaded in this process.
loaded_plugins: list[tuple[str, str]] = []


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def load_entry_points(*, reload: bool = False) -> list[tuple[str, str]]:
    """Load every ``det.plugins`` entry point once per process (``reload``: again, for tests).

    Returns:
        ``(distribution, entry point name)`` of the plugins loaded by this call.

    Raises:
        PluginError: an entry point failed to load (or its function raised), naming the distribution.
    """
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded and not reload:
            return []
        _entry_points_loaded = True
        done: list[tuple[str, str]] = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an unknown distribution"
            try:
                target = ep.load()
                if callable(target) and not isinstance(target, type):
                    target()
            except PluginError:
                raise
            except Exception as e:
                raise PluginError(
                    f"plugin '{ep.name}' ({ep.value}) of the installed distribution '{dist}' failed to load: "
                    f"{_one_line(e)} (entry-point group {ENTRY_POINT_GROUP}; fix or uninstall '{dist}')"
                ) from e
            done.append((dist, ep.name))
            logger.debug("loaded det plugin %s from %s", ep.name, dist)
        loaded_plugins.extend(done)
        return done


def import_custom_modules(spec: Any, source: str = "<config>") -> list[str]:
    """Import the modules of a ``custom_imports`` section; returns the names imported.

    Args:
        spec: ``{imports: name or [names], allow_failed_imports: bool}`` or None.
        source: the config, named in errors.

    Raises:
        PluginError: a malformed section, or a module that failed to import (without ``allow_failed_imports``).
    """
    if spec is None:
        return []
    key = "custom_imports"
    if not isinstance(spec, Mapping):
        raise PluginError(f"{source}: {key}: expected {{imports: [my_pkg.my_module], allow_failed_imports: false}}, "
                          f"got {spec!r}")
    unknown = sorted(set(spec) - CUSTOM_IMPORTS_KEYS)
    if unknown:
        raise PluginError(f"{source}: {key}.{unknown[0]}: unknown key (valid: imports, allow_failed_imports)")
    names = spec.get("imports", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
        raise PluginError(f"{source}: {key}.imports: expected a list of module names (e.g. [my_pkg.my_head]), "
                          f"got {names!r}")
    allow_failed = spec.get("allow_failed_imports", False)
    if not isinstance(allow_failed, bool):
        raise PluginError(f"{source}: {key}.allow_failed_imports: expected true or false, got {allow_failed!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # as `python -m` does; last, so it never shadows an installed module
    imported = []
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
        except Exception as e:
            if allow_failed:
                logger.warning("%s: %s.imports.%d: module '%s' failed to import and is ignored "
                               "(allow_failed_imports: true): %s", source, key, i, name, _one_line(e))
                continue
            raise PluginError(
                f"{source}: {key}.imports.{i}: cannot import module '{name}': {_one_line(e)} "
                "(put its directory on PYTHONPATH, or set allow_failed_imports: true to skip it)"
            ) from e
        imported.append(name)
    return imported


def prepare(cfg: Mapping[str, Any], source: str = "<config>") -> None:
    """Load installed plugins (once) and the config's ``custom_imports``: call before building from ``cfg``."""
    load_entry_points()
    import_custom_modules(cfg.get("custom_imports"), source)


__all__ = ["ENTRY_POINT_GROUP", "import_custom_modules", "load_entry_points", "loaded_plugins", "prepare"]
