"""`det convert-dataset`: write datasets as COCO json + images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from detcli.cli._common import err_console, handle_errors, print_json

app = typer.Typer(help="Convert datasets to COCO format.", no_args_is_help=True)




@app.command("shapes")
@handle_errors
def shapes(
    out_dir: Annotated[Path, typer.Argument(help="Output folder (images/ and annotations/ are created in it).")],
    num_images: Annotated[int, typer.Option("--num-images", min=1, help="Number of images to write.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic generator.")] = 0,
    split: Annotated[str, typer.Option("--split", help="train or val (disjoint images).")] = "train",
    json_out: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Write the synthetic shapes dataset as JPEG images plus a COCO json (same data as ShapesDataset)."""
    from detcli.data.shapes import export_shapes_coco

    if split not in ("train", "val"):
        from detcli.cli._common import fail

        raise fail(f"--split must be train or val, got '{split}'")
    ann = export_shapes_coco(out_dir, num_images=num_images, seed=seed, split=split)
    info = {"annotations": str(ann), "images": num_images, "split": split, "seed": seed}
    if json_out:
        print_json(info)
    else:
        err_console.print(f"[green]wrote[/] {num_images} images and {ann}")
