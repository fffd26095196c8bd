"""Atomic file output: write to a temporary file beside the target, then rename it into place.

A crash or an error never leaves a half-written checkpoint, results file or image behind. Also the
file suffixes det reads as images (:data:`IMAGE_EXTENSIONS`) and :func:`read_image_file`, the one way det
opens an image by path.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: File suffixes (lower case) treated as images when a folder is scanned (converters, ``det infer``).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image_file(path: str | os.PathLike[str], flags: int | None = None) -> Any:
    """The decoded image (``numpy.ndarray``, BGR for colour) at ``path``, or None when the bytes are no image.

    Python opens the file and OpenCV decodes the bytes (``cv2.imdecode``, as the ``LoadImageFromFile``
    transform does): ``cv2.imread`` itself crashes the process (segmentation fault) on a path with
    characters it cannot encode as UTF-8, such as the surrogate escapes Python uses for file names that
    are not valid UTF-8, while ``open`` takes any path the OS does.

    Args:
        flags: ``cv2.IMREAD_*`` (default ``cv2.IMREAD_COLOR``).

    Raises:
        OSError: the file cannot be opened (``FileNotFoundError``, ``IsADirectoryError``, ...).
    """
    import cv2
    import numpy as np

    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR if flags is None else flags)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666 & ~umask``).

    Example:
        >>> with atomic_output("out.json") as tmp:   # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(obj: Any, path: str | os.PathLike[str], indent: int | None = None) -> Path:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=str)
    return Path(path)
