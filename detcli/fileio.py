"""Atomic file output: write to a temporary file beside the target, then rename it into place.

A crash or an error never leaves a half-written checkpoint, results file or image behind. Also the
file suffixes det reads as images (:data:`IMAGE_EXTENSIONS`) and :func:`read_image_file`, the one way det
opens an image by path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detcli.errors import OutputError

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


#: errno values of a write that failed because of the place written to (not of the data): reported
#: as :class:`~detcli.errors.OutputError` naming the file and a fix.
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device: free some space (or write elsewhere) and run again",
    errno.EDQUOT: "disk quota exceeded: free some space (or write elsewhere) and run again",
    errno.EFBIG: "the file is too large for this file system: write it elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: choose a writable path or fix the folder's permissions",
    errno.EPERM: "operation not permitted: choose a writable path or fix the folder's permissions",
    errno.EIO: "input/output error on the device: check the disk and run again",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
}

#: Names :func:`atomic_output` gives its temporary files (``.<name>.<random>.tmp<suffix>``) and
#: :func:`detcli.engine.checkpoint.atomic_link` its links (``.<name>.<pid>.tmp``).
TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?|\d+\.tmp)$")


def output_error(path: str | os.PathLike[str], e: OSError, what: str = "file") -> OutputError | None:
    """An :class:`OutputError` for a failed write of ``path`` caused by where it goes, else None."""
    hint = _WRITE_ERRNOS.get(e.errno or 0)
    if hint is None:
        return None
    return OutputError(f"{path}: cannot write the {what}: {hint}")


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is (or can be created as) a folder det can write to.

    Nothing is created: the nearest existing folder on the way is probed with a temporary file that
    is removed again (this also catches read-only mounts and the root user's writes there).

    Args:
        path: the folder.
        what: what the folder is, for the message (e.g. ``"work dir (--work-dir)"``).

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: ``path`` or a folder on its way is a file, or the folder cannot be written; the
            message names the path and the fix.
    """
    p = Path(path)
    existing = _nearest_existing(p)
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == p else f"cannot be created: {existing} is a file, not a folder"
        raise OutputError(f"{p}: the {what} {where}; choose another path")
    if not existing.exists():  # a dangling symlink on the way
        raise OutputError(f"{p}: the {what} cannot be created: {existing} is a broken link; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".det-write-check.", suffix=".tmp", dir=existing)
    except OSError as e:
        reason = _WRITE_ERRNOS.get(e.errno or 0, e.strerror or str(e))
        where = "" if existing == p else f" (in {existing})"
        raise OutputError(f"{p}: cannot write the {what}{where}: {reason}") from e
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return p


def check_writable_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """Check, before any work, that the file ``path`` can be written (see :func:`check_writable_dir`).

    Raises:
        OutputError: ``path`` is a folder, or its folder cannot be created or written.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: the {what} is a folder; give a file name (e.g. {p / 'results.json'})")
    check_writable_dir(p.parent if str(p.parent) else Path("."), f"folder of the {what}")
    return p


def clean_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files a killed det process left in ``folder`` (only det's own names).

    Returns:
        The files removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False) and TEMP_NAME.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _fsync_path(path: str | os.PathLike[str], directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if not directory:  # some file systems cannot fsync a folder; a file that cannot be synced is a failed write
            raise e
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temporary file is synced to disk before it is renamed over ``path`` (and the folder after),
    so a crash or power loss leaves either the old or the new file, never a torn one. The file gets
    the permissions a plain ``open(path, "w")`` would give (``0o666 & ~umask``).

    Raises:
        OutputError: the write failed because of where it goes (disk full, read-only, permissions);
            ``path`` is unchanged.

    Example:
        >>> with atomic_output("out.json") as tmp:   # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{out.suffix}", dir=out.parent)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTDIR):  # a file on the way: name it
            check_writable_dir(out.parent, "folder of the output file")
        err = output_error(out, e)
        if err is None:
            raise
        raise err from e
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            _fsync_path(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, out)
        except OSError as e:
            err = output_error(out, e)
            if err is None:
                raise
            kept = f"the previous {out.name} is unchanged" if out.exists() else "no partial file was left"
            raise OutputError(f"{err} ({kept})") from e
        _fsync_path(out.parent, directory=True)
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
