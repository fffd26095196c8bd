"""What every command shares: the stderr console, error rendering, logging and progress display."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from detcli.errors import DetError

F = TypeVar("F", bound=Callable[..., Any])

#: Logs, progress and errors go to stderr; data goes to stdout.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    debug: bool = False


state = State()


def setup_logging(verbose: bool = False) -> None:
    """Send det's library logs to stderr (rich on a terminal, plain lines otherwise)."""
    root = logging.getLogger("detcli")
    root.handlers.clear()
    if err_console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def fail(message: str) -> typer.Exit:
    """Print one red error line to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code=1)


def handle_errors(fn: F) -> F:
    """Turn a :class:`DetError` into one red line and exit code 1 (``--debug``: the traceback too)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DetError as e:
            if state.debug:
                err_console.print_exception()
            raise fail(_escape(str(e))) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as one JSON document."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def set_ops_backend(ops: str | None) -> None:
    if ops is not None:
        from detcli.ops import set_backend

        set_backend(ops)


class RichProgress:
    """Renders engine progress events as a rich progress bar on a terminal (no-op otherwise)."""

    def __init__(self) -> None:
        self.enabled = err_console.is_terminal
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "RichProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=err_console, transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def __call__(self, event: Any) -> None:
        """Show one bar per phase (train over the whole run; val/test over images)."""
        if self._progress is None:
            return
        phase = str(event.phase)
        info = ""
        if "loss" in (event.losses or {}):
            info = f"loss {float(event.losses['loss']):.4f}"
        if event.lr is not None:
            info += f"  lr {float(event.lr):.2e}"
        if event.message:
            info += f"  {event.message}"
        desc = f"{phase} (epoch {event.epoch})" if phase == "train" else phase
        task = self._tasks.get(phase)
        if task is None or (phase != "train" and event.iter == 0):
            if task is not None:
                self._progress.remove_task(task)
            task = self._tasks[phase] = self._progress.add_task(desc, total=event.max, info=info)
        self._progress.update(task, completed=event.iter, total=event.max, info=info, description=desc)
