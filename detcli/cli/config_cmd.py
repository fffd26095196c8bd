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


@app.command("import")
@handle_errors
def import_(
    config: Annotated[str, typer.Argument(help="MMDetection 2.x Python config (.py); - reads it from stdin (its _base_ "
                                               "paths are then relative to the current folder).")],
    mmdet_root: Annotated[Optional[str], typer.Option("--mmdet-root", help="An mmdet checkout: _base_ files not found next "
                                                                           "to a config are looked up in its configs/.")] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Write the preset here (default or -: stdout).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write the preset even when det cannot run parts of it (they stay "
                                                        "listed as warnings, and as comments at its top).")] = False,
) -> None:
    """Translate an MMDetection 2.x Python config and its _base_ chain into one det YAML preset, without running
    the Python file. Components or keys det does not have are all listed (as warnings), each with the nearest det
    name; then nothing is written (exit 1) unless --force."""
    import logging
    import sys

    import detcli.data  # noqa: F401  (registers datasets and transforms)
    import detcli.models  # noqa: F401  (registers the model components)
    from detcli.cli._common import err_console
    from detcli.config import MAX_PRESET_BYTES
    from detcli.config_import import import_mmdet_config
    from detcli.engine.validate import check_build
    from detcli.errors import ConfigError
    from detcli.fileio import write_text_atomic

    log = logging.getLogger("detcli.cli.config_import")
    text = sys.stdin.read(MAX_PRESET_BYTES + 1) if config == "-" else None  # more is refused as too large
    result = import_mmdet_config("<stdin>" if config == "-" else config, mmdet_root=mmdet_root, text=text,
                                 validate=check_build)  # det config check's dry-run build
    for note in result.notes:
        log.info("%s", note)
    for problem in result.problems:
        log.warning("det cannot run %s", problem)
    body = result.text
    if result.problems:
        if not force:
            raise ConfigError(f"{config}: {len(result.problems)} part(s) of the config det cannot run as written "
                              "(listed above); nothing written: fix the config, or write the preset anyway with "
                              "--force and edit it")
        body = "".join(f"# det cannot run: {p}\n" for p in result.problems) + body
    if output is None or output == "-":
        typer.echo(body, nl=False)
    else:
        write_text_atomic(body, output)
        err_console.print(f"preset written to {output}" + (f" (_base_: {', '.join(result.bases)})" if result.bases else ""))
