"""`det convert-dataset`: convert VOC, YOLO, labelme, Cityscapes or plain image folders to COCO json, and check
COCO files. The converters live in :mod:`detcli.data.converters`; this module parses and renders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from detcli.cli._common import fail, handle_errors, print_json

app = typer.Typer(
    help="Convert datasets to COCO json (VOC, YOLO, labelme, Cityscapes, image folders, synthetic shapes) "
         "and check COCO files. Every converter checks what it wrote and prints the summary.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout (for machines).")]
_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def _render_report(report: Any, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("severity", "check", "count", "examples"):
        table.add_column(col, justify="right" if col == "count" else "left", overflow="fold")
    for issue in report.issues:
        examples = "; ".join(issue.examples) + (" ..." if issue.count > len(issue.examples) else "")
        table.add_row(f"[{_STYLE[issue.severity]}]{issue.severity}[/]", f"{issue.code}: {issue.message}",
                      str(issue.count), examples)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]{title}[/]: {report.num_images} images, {report.num_annotations} annotations, "
                  f"{report.num_categories} categories: {report.num_errors} errors, {report.num_warnings} warnings")
    if report.issues:
        table.title = None
        console.print(table)


def _finish(result: Any, json_out: bool, extra: dict[str, Any] | None = None) -> None:
    """Print a conversion's summary (stdout; ``extra`` keys join the JSON) and exit 1 when what was written has errors."""
    if json_out:
        print_json({**(extra or {}), **result.to_dict()})
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False, soft_wrap=True)
        for out in result.outputs:
            _render_report(out.report, f"{out.ann_file} (img_prefix {out.img_prefix})")
        if result.warnings:
            console.print(f"[yellow]{len(result.warnings)} warnings about the source data:[/]")
            for w in result.warnings:
                console.print(f"  - {escape(w)}")
    if result.num_errors:
        raise fail(f"the converted data has {result.num_errors} errors (see the summary); fix the source data")


@app.command("voc")
@handle_errors
def voc(
    devkit: Annotated[Path, typer.Argument(help="VOCdevkit folder (with VOC2007/, VOC2012/) or one year folder.")],
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Folder for the json files (vocYY_<split>.json).")],
    classes: Annotated[Path | None, typer.Option("--classes", help="Class names file replacing the 20 VOC classes.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Pascal VOC XML to one COCO json per ImageSets/Main/{train,val,trainval,test}.txt found.

    Boxes follow mmdet's converter (xmin-1, ymin-1, width xmax-xmin+1); difficult objects are kept
    with ignore: 1 (loaded as ignore regions); <part> boxes inside an object are not objects.
    Use the devkit folder as img_prefix.
    """
    from detcli.data.converters import convert_voc

    _finish(convert_voc(devkit, out_dir, classes=classes), json_out)


@app.command("yolo")
@handle_errors
def yolo(
    root: Annotated[Path, typer.Argument(help="Folder with images/ and labels/ (optionally split subfolders).")],
    names: Annotated[Path, typer.Option("--names", help="Class names: names.txt (one per line) or a data.yaml.")],
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Folder for the json files (instances_<split>.json).")],
    json_out: JsonOpt = False,
) -> None:
    """YOLO txt labels (class cx cy w h, or class + polygon) to one COCO json per split.

    Boxes become absolute with the image size read from the file header; images without a label
    file have no boxes; label files without an image are listed as warnings; malformed lines are
    reported as file:line with the fix. Use images/<split>/ as img_prefix.
    """
    from detcli.data.converters import convert_yolo

    _finish(convert_yolo(root, names, out_dir), json_out)


@app.command("images2coco")
@handle_errors
def images2coco(
    img_dir: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    classes: Annotated[Path, typer.Argument(help="Class names file (one per line, or a data.yaml).")],
    out_file: Annotated[Path, typer.Argument(help="The .json to write.")],
    exclude_extensions: Annotated[list[str] | None, typer.Option(
        "--exclude-extensions", help="Skip images with these extensions (repeatable, e.g. png).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """A test-set style COCO json (images and categories, no annotations) for `det test` on unlabelled images."""
    from detcli.data.converters import images_to_coco

    _finish(images_to_coco(img_dir, classes, out_file, exclude_extensions or ()), json_out)


@app.command("labelme")
@handle_errors
def labelme(
    folder: Annotated[Path, typer.Argument(help="Folder of labelme .json files (searched recursively) and images.")],
    out_file: Annotated[Path, typer.Option("-o", "--out", help="The COCO .json to write.")],
    classes: Annotated[Path | None, typer.Option("--classes", help="Class names file (default: the labels found, sorted).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """labelme polygons and rectangles to one COCO json; shapes sharing label and group_id are one instance."""
    from detcli.data.converters import convert_labelme

    _finish(convert_labelme(folder, out_file, classes=classes), json_out)


@app.command("cityscapes")
@handle_errors
def cityscapes(
    root: Annotated[Path, typer.Argument(help="Cityscapes folder with gtFine/ and leftImg8bit/.")],
    out_dir: Annotated[Path, typer.Option("-o", "--out-dir", help="Folder for instancesonly_filtered_gtFine_<split>.json.")],
    json_out: JsonOpt = False,
) -> None:
    """Cityscapes gtFine polygons of the 8 instance classes to one COCO json per split; *group labels are crowd."""
    from detcli.data.converters import convert_cityscapes

    _finish(convert_cityscapes(root, out_dir), json_out)


@app.command("check")
@handle_errors
def check(
    ann_file: Annotated[str, typer.Argument(help="COCO annotation json ('-' reads stdin).")],
    img_dir: Annotated[Path | None, typer.Option("--img-dir", help="Image folder: report missing, empty (0-byte) and truncated image files and files whose size differs from the json's width/height.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a COCO json: duplicate ids, undeclared categories, missing images, bad boxes; with --img-dir missing, empty, truncated or mis-sized image files.

    Prints a summary table (errors, warnings, info). Exit code 1 when there are errors;
    warnings and info do not fail.
    """
    from detcli.data.converters import check_coco_file

    report = check_coco_file(ann_file, img_dir)
    if json_out:
        print_json(report.to_dict())
    else:
        _render_report(report, "stdin" if ann_file == "-" else ann_file)
    if not report.ok:
        raise fail(f"{'stdin' if ann_file == '-' else ann_file}: {report.num_errors} errors")


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
    from detcli.data.converters import convert_shapes

    if split not in ("train", "val"):
        raise fail(f"--split must be train or val, got '{split}'")
    result = convert_shapes(out_dir, num_images=num_images, seed=seed, split=split)
    extra = {"annotations": str(result.outputs[0].ann_file), "images": num_images, "split": split, "seed": seed}
    _finish(result, json_out, extra)
