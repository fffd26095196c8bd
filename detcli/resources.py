"""Where the files shipped with det live: presets (YAML) and kernels (CUDA sources).

In a wheel they sit inside the package (``detcli/_presets``, ``detcli/_kernels``); in a source
checkout or an editable install they are the repository's ``presets/`` and ``kernels/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _first_dir(*candidates: Path) -> Path | None:
    for c in candidates:
        if c.is_dir():
            return c
    return None


def presets_dir() -> Path | None:
    return _first_dir(_PACKAGE / "_presets", _PACKAGE.parent / "presets")


def kernels_dir() -> Path | None:
    return _first_dir(_PACKAGE / "_kernels", _PACKAGE.parent / "kernels")


def list_presets() -> list[Path]:
    d = presets_dir()
    return sorted(p for p in d.glob("*.yaml")) if d else []


def find_preset(name: str) -> Path | None:
    """Return the shipped preset called ``name`` (with or without ``.yaml``, or ``presets/NAME``)."""
    d = presets_dir()
    if d is None:
        return None
    stem = Path(name).name
    for candidate in (d / stem, d / f"{stem}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def kernel_source(name: str) -> str:
    """Return the text of the CUDA source ``kernels/<name>``."""
    d = kernels_dir()
    if d is None or not (d / name).is_file():
        from detcli.errors import KernelError

        raise KernelError(f"kernel source '{name}' is not shipped with this det installation (looked in {d})")
    return (d / name).read_text()
