"""`det convert-checkpoint` and `det publish`: bring outside weights in, and ship det checkpoints out."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import err_console, handle_errors, print_json


@handle_errors
def convert_checkpoint(
    source: Annotated[str, typer.Argument(help="Where the file comes from: mmdet (MMDetection 2.x / 3.x) or torchvision.", metavar="{mmdet,torchvision}")],
    input_path: Annotated[str, typer.Argument(help="The checkpoint file, or a URL / torchvision:// URI (downloaded once into torch's cache).", metavar="IN")],
    output: Annotated[str, typer.Argument(help="The det checkpoint to write.", metavar="OUT")],
    preset: Annotated[Optional[str], typer.Option("--preset", help="det preset of the same architecture (default: guessed from the file's layers).")] = None,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override keys of the preset: a.b.c=V.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary and the load table as JSON on stdout.")] = False,
) -> None:
    """Convert an MMDetection or torchvision detector checkpoint into a det checkpoint (weights, resolved
    config, class names, provenance); every det weight must be filled. Prints the load table."""
    from detcli.tools.conversion import convert_checkpoint as run

    result = run(source, input_path, output, preset=preset, cfg_options=cfg_options)
    if json_out:
        print_json({"output": str(result.output), "preset": result.preset, "format": result.format,
                    "num_classes": len(result.classes), "load": result.report.to_dict()})
        return
    err_console.print(result.report.table(), markup=False, highlight=False)
    err_console.print(f"[green]converted[/] {result.format} with preset {result.preset} ({len(result.classes)} classes)")
    typer.echo(str(result.output))


@handle_errors
def publish(
    checkpoint: Annotated[str, typer.Argument(help="A det checkpoint.")],
    out_dir: Annotated[str, typer.Argument(help="Folder for <name>-<sha256[:8]>.pth and its .json sidecar.")],
    name: Annotated[Optional[str], typer.Option("--name", help="File name stem (default: the checkpoint's).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the sidecar fields as JSON on stdout.")] = False,
) -> None:
    """Strip optimizer, scheduler and RNG state and write CHECKPOINT as <name>-<sha256[:8]>.pth with a JSON
    sidecar (sha256, size, classes, epoch): the hash prefix torch.hub and det check on download."""
    from detcli.tools.conversion import publish_checkpoint

    result = publish_checkpoint(checkpoint, out_dir, name=name)
    if json_out:
        print_json({"checkpoint": str(result.checkpoint), "sidecar": str(result.sidecar), "sha256": result.sha256,
                    "size_bytes": result.size_bytes})
        return
    err_console.print(f"sha256 {result.sha256}, {result.size_bytes / 2**20:.1f} MiB; sidecar {result.sidecar}")
    typer.echo(str(result.checkpoint))
