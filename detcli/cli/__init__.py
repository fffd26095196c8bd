"""The ``det`` command line: one typer app, one module per subcommand.

Command modules only parse arguments, call one library function and render its result. Heavy
imports (torch, cupy) happen inside the commands so ``det --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from detcli import __version__
from detcli.cli import (
    analyze_logs,
    anchors,
    benchmark,
    browse,
    completion,
    config_cmd,
    confusion,
    convert,
    env,
    export,
    infer,
    test,
    train,
    weights_cmd,
)
from detcli.cli._common import err_console, setup_logging, state

#: Help panels of ``det --help``: the main commands first (the default "Commands" panel), tools after.
DATA_PANEL = "Datasets and results"
TOOLS_PANEL = "Checkpoints and setup"


class DetGroup(TyperGroup):
    """The root ``det`` group: usage errors as one red line with exit code 1, flags without a type.

    Click reports usage errors (unknown option, missing argument, bad choice) in a multi-line box
    with exit code 2; det's rule for every error is one line on stderr and exit code 1. Typer also
    shows a ``<bool>`` type next to flags (``--json``, ``--help``), which take no value.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = list(self.context_settings.get("help_option_names", ["--help"]))
        _polish_help(self, names)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # click's UsageError / BadParameter / ClickException
            if type(e).__name__ == "NoArgsIsHelpError":  # `det`, `det config`: the help is already printed
                sys.exit(0)
            ctx = getattr(e, "ctx", None)
            path = ctx.command_path if ctx is not None else self._command_path(prog_name or "det", argv)
            message = " ".join(e.format_message().split())
            from rich.markup import escape

            err_console.print(f"[bold red]error:[/] {escape(message)} — see '{escape(path)} --help'",
                              markup=True, highlight=False)
            sys.exit(1)
        except typer.Abort:
            err_console.print("[bold red]error:[/] aborted", markup=True, highlight=False)
            sys.exit(1)
        # Non-standalone mode returns the code of a `typer.Exit` (every command returns None).
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)

    def _command_path(self, prog_name: str, argv: list[str]) -> str:
        """``det train`` for ``train p.yaml --device`` (errors raised without a click context)."""
        words = [prog_name]
        group: Any = self
        for token in argv:
            if token.startswith("-"):
                continue
            commands = getattr(group, "commands", None)
            if not commands or token not in commands:
                break
            words.append(token)
            group = commands[token]
        return " ".join(words)


def _polish_help(command: Any, help_option_names: list[str]) -> None:
    """Give every flag (and the help option) of ``command`` and its subcommands an empty metavar.

    Also joins the lines of each paragraph of a command's help (rich markup keeps a docstring's
    line breaks, which then break the text mid-sentence in ``det --help``).
    """
    if command.help:
        paragraphs = [" ".join(p.split()) for p in "\n".join(line.strip() for line in command.help.splitlines()).split("\n\n")]
        command.help = "\n\n".join(p for p in paragraphs if p)
    ctx = typer.Context(command, help_option_names=help_option_names)
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _polish_help(sub, help_option_names)


app = typer.Typer(
    cls=DetGroup,
    name="det",
    help="det: train, evaluate, run and export object detectors from YAML presets.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"det {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug-level logs on stderr.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """det: train, evaluate, run and export object detectors from YAML presets."""
    state.debug = debug
    setup_logging(verbose)


app.command("train")(train.train)
app.command("test")(test.test)
app.command("eval", help="Same as [bold]det test[/].")(test.test)
app.command("infer")(infer.infer)
app.command("export-onnx")(export.export_onnx)
app.add_typer(export.app, name="export")
app.command("confusion-matrix", rich_help_panel=DATA_PANEL)(confusion.confusion_matrix)
app.command("analyze-results", rich_help_panel=DATA_PANEL)(browse.analyze_results)
app.command("browse-dataset", rich_help_panel=DATA_PANEL)(browse.browse_dataset)
app.command("optimize-anchors", rich_help_panel=DATA_PANEL)(anchors.optimize_anchors)
app.add_typer(convert.app, name="convert-dataset", rich_help_panel=DATA_PANEL)
app.add_typer(analyze_logs.app, name="analyze-logs", rich_help_panel=DATA_PANEL)
app.command("convert-checkpoint", rich_help_panel=TOOLS_PANEL)(weights_cmd.convert_checkpoint)
app.command("publish", rich_help_panel=TOOLS_PANEL)(weights_cmd.publish)
app.command("env", rich_help_panel=TOOLS_PANEL)(env.env)
app.command("completion", rich_help_panel=TOOLS_PANEL)(completion.completion)
app.add_typer(config_cmd.app, name="config", rich_help_panel=TOOLS_PANEL)
app.add_typer(benchmark.app, name="benchmark", rich_help_panel=TOOLS_PANEL)

# Options that take several values in one go (`--cfg-options a=1 b=2`, `--metric bbox segm`).
_KV_MULTI = ("--cfg-options", "--eval-options")
_WORD_MULTI = {"--metric": {"bbox", "segm", "proposal", "proposal_fast", "mAP", "recall"},
               "--eval": {"bbox", "segm", "proposal", "proposal_fast", "mAP", "recall"}}
# Options whose values are the following words up to the next option (`--keys a b`, `--legend A B`);
# `--keys` stops at a word that names a log file so `--keys loss a.log.json` keeps the log positional,
# `--skip-type` at a word that is not a CamelCase transform name (a preset).
_FREE_MULTI = ("--keys", "--legend", "--skip-type")


def _benchmark_default(argv: list[str]) -> list[str]:
    """``det benchmark PRESET ...`` means ``det benchmark model PRESET ...`` (``kernels`` and help stay)."""
    if "benchmark" not in argv:
        return argv
    i = argv.index("benchmark")
    if any(not a.startswith("-") for a in argv[:i]):  # "benchmark" is an argument of another command
        return argv
    rest = argv[i + 1:]
    if not rest or rest[0] in benchmark.SUBCOMMANDS or rest[0] in ("-h", "--help"):
        return argv
    return [*argv[: i + 1], "model", *rest]


def _is_resume_path(word: str) -> bool:
    """Whether the word after ``--resume`` is its checkpoint (any suffix but a preset's ``.yaml``/``.yml``:
    ``x.pth``, ``snapshot.ckpt``, ``run/iter_4``, an existing file) rather than the preset argument."""
    from pathlib import Path

    p = Path(word)
    if p.suffix.lower() in (".yaml", ".yml"):
        return False
    return bool(p.suffix) or "/" in word or os.sep in word or p.is_file()


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Rewrite mmdet-style multi-value options into the repeated form typer parses.

    ``--cfg-options a=1 b=2`` becomes ``--cfg-options a=1 --cfg-options b=2`` (values are the
    following words that contain ``=``), ``--metric bbox segm`` becomes two ``--metric`` options
    (values are known metric names), ``--keys a b`` / ``--legend A B`` take the following words up to
    the next option, ``det benchmark PRESET`` becomes ``det benchmark model PRESET``, and a bare ``--resume`` (not followed by a
    checkpoint path: see :func:`_is_resume_path`) becomes ``--resume auto`` (the latest checkpoint of the work dir).
    """
    out: list[str] = []
    i = 0
    argv = _benchmark_default(list(argv))
    while i < len(argv):
        token = argv[i]
        if token in _KV_MULTI or token in _WORD_MULTI:
            accept = (lambda w: "=" in w) if token in _KV_MULTI else (lambda w, v=_WORD_MULTI[token]: w in v)  # type: ignore[misc]
            j = i + 1
            values = []
            while j < len(argv) and not argv[j].startswith("-") and (accept(argv[j]) or j == i + 1):
                values.append(argv[j])
                j += 1
            if not values:
                out.append(token)
                i += 1
                continue
            for v in values:
                out.extend([token, v])
            i = j
            continue
        if token in _FREE_MULTI:
            j = i + 1
            while (j < len(argv) and not argv[j].startswith("-") and not (token == "--keys" and argv[j].endswith(".json"))
                   and not (token == "--skip-type" and j > i + 1 and not argv[j][:1].isupper())):
                out.extend([token, argv[j]])
                j += 1
            if j == i + 1:
                out.append(token)
            i = j
            continue
        if token == "--resume":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or nxt.startswith("-") or not (nxt == "auto" or _is_resume_path(nxt)):
                out.extend(["--resume", "auto"])
                i += 1
                continue
        out.append(token)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``det`` console script and ``python -m detcli``."""
    args = normalize_argv(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="det")
