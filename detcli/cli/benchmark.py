"""`det benchmark`: timings. `det benchmark kernels` times the NMS and RoIAlign backends."""

from __future__ import annotations

from typing import Annotated

import typer

from detcli.cli._common import err_console, handle_errors, print_json

app = typer.Typer(
    help="Measure speed: [bold]kernels[/] times NMS and RoIAlign on every available ops backend.",
    rich_markup_mode="rich",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Keep `benchmark` a command group even while it has a single subcommand."""


@app.command("kernels")
@handle_errors
def kernels(
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed calls per measurement (median reported).")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as one JSON list on stdout.")] = False,
) -> None:
    """Time NMS (1k, 5k, 20k random boxes) and RoIAlign (256 channels x 1000 RoIs) on every ops backend
    available here (torchvision, the plain-PyTorch NMS, and the CuPy kernels on a GPU), with the speed
    ratio against torchvision (> 1 is faster). Progress goes to stderr."""
    from rich.console import Console
    from rich.table import Table

    from detcli.ops.benchmark import run_kernel_benchmark

    rows = run_kernel_benchmark(repeats=repeats, progress=lambda msg: err_console.print(f"[dim]{msg}[/]"))
    if json_out:
        print_json([row.to_dict() for row in rows])
        return
    table = Table(
        title=f"ops kernels (median of {repeats})",
        caption="speed-up = torchvision time / backend time (> 1: faster than torchvision)",
    )
    for column in ("op", "size", "device", "backend", "median ms", "speed-up"):
        table.add_column(column, justify="right" if column in ("median ms", "speed-up") else "left")
    for row in rows:
        table.add_row(row.op, row.size, row.device, row.backend, f"{row.median_s * 1e3:.2f}", f"{row.ratio:.2f}x")
    Console().print(table)
