"""`det env`: versions of det's dependencies and the compute backends available."""

from __future__ import annotations

from typing import Annotated

import typer

from detcli.cli._common import handle_errors, print_json


@handle_errors
def env(json_out: Annotated[bool, typer.Option("--json", help="Print as one JSON object.")] = False) -> None:
    """Show det, Python, torch, torchvision, CuPy and ONNX versions, CUDA availability and the ops backend."""
    from detcli.engine.environment import collect_env

    info = collect_env()
    if json_out:
        print_json(info)
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        typer.echo(f"{key.ljust(width)}  {value}")
