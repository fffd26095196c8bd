"""The ``det`` command line: one typer app, one module per subcommand.

Command modules only parse arguments, call one library function and render its result. Heavy
imports (torch, cupy) happen inside the commands so ``det --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from detcli import __version__
from detcli.cli import analyze_logs, anchors, benchmark, browse, completion, config_cmd, confusion, convert, env, export, infer, test, train, weights_cmd
from detcli.cli._common import setup_logging, state

app = typer.Typer(
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
app.command("env")(env.env)
app.add_typer(config_cmd.app, name="config")
app.add_typer(convert.app, name="convert-dataset")
app.add_typer(benchmark.app, name="benchmark")
app.add_typer(analyze_logs.app, name="analyze-logs")
app.command("confusion-matrix")(confusion.confusion_matrix)
app.command("optimize-anchors")(anchors.optimize_anchors)
app.command("browse-dataset")(browse.browse_dataset)
app.command("analyze-results")(browse.analyze_results)
app.command("convert-checkpoint")(weights_cmd.convert_checkpoint)
app.command("publish")(weights_cmd.publish)
app.command("completion")(completion.completion)

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
            accept = (lambda w: "=" in w) if token in _KV_MULTI else (lambda w, v=_WORD_MULTI[token]: w in v)
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
