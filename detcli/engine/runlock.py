"""A lock file that keeps two det runs from writing the same work dir (or results file) at once.

``with run_lock(work_dir / LOCK_NAME, what="work dir"):`` creates the lock file exclusively
(``O_CREAT | O_EXCL``) with the holder's PID, host name, process start time and command line, and
removes it on exit. A second run finds the file and refuses with the first one's PID and host.
A lock left behind by a run that died (its PID is gone on this host, or now belongs to another
process) is taken over with a warning, so a crash never blocks a work dir for good. A lock held from
another host cannot be checked from here: the message says to delete the file if that run is over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detcli.errors import OutputError
from detcli.fileio import check_writable_file, output_error

logger = logging.getLogger(__name__)

#: The lock file of a work dir.
LOCK_NAME = ".det.lock"

#: An unreadable lock file (a run killed between creating and writing it) younger than this is
#: assumed to be being written; older ones are stale.
UNREADABLE_GRACE_S = 10.0


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/PID/stat`` field 22), to tell a reused PID apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    if start is not None:
        now = _start_time(pid)
        if now is not None and now != start:
            return False  # the PID was reused by a newer process
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _holder(info: dict[str, Any]) -> str:
    since = f" since {info['started']}" if info.get("started") else ""
    cmd = f" ({info['argv']})" if info.get("argv") else ""
    return f"PID {info['pid']} on host {info.get('host', '?')}{since}{cmd}"


def _stale_reason(path: Path, info: dict[str, Any] | None, host: str) -> str | None:
    """Why the existing lock at ``path`` is stale, or None when its run may be alive."""
    if info is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it is gone"
        return f"it is unreadable and {age:.0f} s old" if age > UNREADABLE_GRACE_S else None
    if info.get("host") != host:
        return None
    if not _alive(int(info["pid"]), info.get("start_time")):
        return f"its run ({_holder(info)}) is no longer running"
    return None


def acquire(path: str | os.PathLike[str], what: str = "work dir") -> dict[str, Any]:
    """Create the lock file ``path`` for this process (see the module docstring).

    Returns:
        What the lock file holds.

    Raises:
        OutputError: another live run holds the lock (the message gives its PID and host and the
            fix), or the lock file cannot be written.
    """
    p = Path(path)
    host = socket.gethostname()
    info = {
        "pid": os.getpid(), "host": host, "start_time": _start_time(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": " ".join(sys.argv),
    }
    for _ in range(5):
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read(p)
            reason = _stale_reason(p, other, host)
            if reason is None:
                held = _holder(other) if other else "a run that is starting"
                fix = (
                    "wait for it to finish, stop it, or use another work dir"
                    if other is None or other.get("host") == host
                    else f"if that run is over, delete {p}"
                )
                raise OutputError(f"{p.parent}: the {what} is in use by another det run ({held}): {fix}") from None
            logger.warning("taking over the stale lock %s: %s", p, reason)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
            continue
        except OSError as e:
            err = output_error(p, e, f"lock file of the {what}")
            if err is None:
                raise
            raise err from e
        try:
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        return info
    raise OutputError(f"{p}: could not take the lock of the {what} (other runs keep replacing it); try again")


def release(path: str | os.PathLike[str]) -> None:
    """Remove the lock file ``path`` if this process holds it."""
    p = Path(path)
    info = _read(p)
    if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


@contextlib.contextmanager
def run_lock(path: str | os.PathLike[str], what: str = "work dir", enabled: bool = True) -> Iterator[Path | None]:
    """Hold the lock file ``path`` for the duration of the block (nothing when not ``enabled``)."""
    if not enabled:
        yield None
        return
    acquire(path, what)
    try:
        yield Path(path)
    finally:
        release(path)


def lock_path_for(output: str | os.PathLike[str]) -> Path:
    """The lock file of an output file: ``.<name>.lock`` beside it."""
    out = Path(output)
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str] | None, what: str = "output file", enabled: bool = True) -> Iterator[Path | None]:
    """Hold the lock of the output file ``output`` (:func:`lock_path_for`) for the block.

    ``output`` is checked first (:func:`detcli.fileio.check_writable_file`). The file's folder is created if needed (and removed again at the end if it stayed empty).
    Nothing happens when ``output`` is None or not ``enabled``.
    """
    if output is None or not enabled:
        yield None
        return
    check_writable_file(output, what)
    lock = lock_path_for(output)
    missing = []
    probe = lock.parent
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err = output_error(lock.parent, e, f"folder of the {what}")
        if err is None:
            raise
        raise err from e
    try:
        with run_lock(lock, what):
            yield lock
    finally:
        for folder in missing:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()


__all__ = ["LOCK_NAME", "acquire", "lock_path_for", "output_lock", "release", "run_lock"]
