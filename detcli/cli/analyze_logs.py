"""`det analyze-logs`: plot training curves and summarize iteration times from `<timestamp>.log.json` files."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import err_console, handle_errors, print_json

app = typer.Typer(
    help="Read det's JSON training logs: [bold]plot-curve[/] draws losses/metrics, [bold]cal-train-time[/] times iterations.",
    rich_markup_mode="rich",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Analyze `<work_dir>/<timestamp>.log.json` files."""


@app.command("plot-curve")
@handle_errors
def plot_curve(
    logs: Annotated[list[str], typer.Argument(help="One or more .log.json files (- reads one from stdin).", metavar="LOG.json...")],
    keys: Annotated[Optional[list[str]], typer.Option("--keys", help="Keys to plot, e.g. --keys loss_cls loss_bbox or bbox_mAP.")] = None,
    out: Annotated[str, typer.Option("--out", help="Figure file: .png, .pdf, .svg or .jpg.")] = "",
    legend: Annotated[Optional[list[str]], typer.Option("--legend", help="One name per log x key (default <log>_<key>).")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Figure title.")] = None,
    eval_interval: Annotated[Optional[int], typer.Option("--eval-interval", min=1, help="Plot only evaluations at multiples of N epochs (iterations).")] = None,
    style: Annotated[str, typer.Option("--style", help="seaborn style: white, dark, whitegrid, darkgrid, ticks.")] = "darkgrid",
) -> None:
    """Plot loss / lr / metric curves of one or several logs on one figure (metrics per evaluation)."""
    from detcli.evaluation.log_analysis import load_logs, plot_curves

    if not out:
        raise typer.BadParameter("--out FILE.png|.pdf is required", param_hint="--out")
    path = plot_curves(load_logs(logs), list(keys or ["loss"]), out, legend=legend, title=title,
                       eval_interval=eval_interval, style=style)
    err_console.print(f"plot written to {path}")


@app.command("cal-train-time")
@handle_errors
def cal_train_time(
    logs: Annotated[list[str], typer.Argument(help="One or more .log.json files (- reads one from stdin).", metavar="LOG.json...")],
    include_outliers: Annotated[bool, typer.Option("--include-outliers", help="Keep the first line of each epoch (start-up).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON list on stdout.")] = False,
) -> None:
    """Slowest and fastest epoch, the std of epoch times and the average s/iter (mmdet's printout); train lines whose time includes an evaluation are left out."""
    from dataclasses import asdict

    from detcli.evaluation.log_analysis import cal_train_time as compute
    from detcli.evaluation.log_analysis import load_logs

    results = [compute(log, include_outliers) for log in load_logs(logs)]
    if json_out:
        print_json([asdict(r) for r in results])
        return
    for r in results:
        typer.echo(r.format())
