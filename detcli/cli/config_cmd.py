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
def list_(json_out: Annotated[bool, typer.Option("--json", help="Print as JSON: one object per preset (name, published AP).")] = False) -> None:
    """List the presets shipped with det, with the published COCO AP of those that name a model-zoo checkpoint
    (`det test PRESET zoo` evaluates it)."""
    from detcli.engine.zoo import list_zoo

    rows = list_zoo()
    if json_out:
        print_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        ap = ""
        if r.get("box_ap") is not None:
            ap = f"box AP {r['box_ap']:.1f}" + (f", mask AP {r['mask_ap']:.1f}" if r.get("mask_ap") is not None else "")
            ap += f" ({r.get('source') or 'published'})"
        typer.echo(f"{r['name']:<{width}}  {ap}".rstrip())


@app.command("check")
@handle_errors
def check(
    preset: Annotated[str, typer.Argument(help="Preset YAML file, or the name of a shipped preset.")],
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
) -> None:
    """Check a preset in a dry run: keys and types, then build the model, the data pipelines (no images or
    annotations read), optimizer, lr schedule and hooks, so build-time errors show here."""
    from detcli.cli._common import err_console
    from detcli.config import load_config, resolve_preset_path
    from detcli.engine.validate import check_build

    source = str(resolve_preset_path(preset))
    check_build(load_config(source, cfg_options), source)
    err_console.print(f"[green]ok[/]: {source}")
