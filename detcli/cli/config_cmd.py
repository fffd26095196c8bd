"""`det config`: show the resolved config of a preset, list or check presets."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import handle_errors, print_json

app = typer.Typer(help="Inspect presets: show the resolved YAML, list shipped presets, check a preset.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(
    preset: Annotated[str, typer.Argument(help="Preset YAML file, or the name of a shipped preset.")],
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
) -> None:
    """Print the fully resolved config (bases merged, overrides applied) as YAML on stdout."""
    from detcli.config import dump_config, load_config

    typer.echo(dump_config(load_config(preset, cfg_options)), nl=False)


@app.command("list")
@handle_errors
def list_(json_out: Annotated[bool, typer.Option("--json", help="Print as a JSON list.")] = False) -> None:
    """List the presets shipped with det."""
    from detcli.resources import list_presets

    names = [p.stem for p in list_presets() if not p.stem.startswith("_")]
    if json_out:
        print_json(names)
    else:
        for name in names:
            typer.echo(name)


@app.command("check")
@handle_errors
def check(
    preset: Annotated[str, typer.Argument(help="Preset YAML file, or the name of a shipped preset.")],
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
) -> None:
    """Validate a preset (keys, types, registered names) without building anything heavy."""
    from detcli.cli._common import err_console
    from detcli.config import load_config, resolve_preset_path
    from detcli.engine import validate_config

    source = str(resolve_preset_path(preset))
    validate_config(load_config(source, cfg_options), source)
    err_console.print(f"[green]ok[/]: {source}")
