"""`det browse-dataset` (training images after the pipeline) and `det analyze-results` (best/worst images)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import err_console, handle_errors, print_json

_DEFAULT_SKIP = ["DefaultFormatBundle", "Normalize", "Collect"]


@handle_errors
def browse_dataset(
    preset: Annotated[str, typer.Argument(help="Preset name or YAML file whose data.train is drawn.")],
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", help="Write the drawn images here (atomically).")] = None,
    not_show: Annotated[bool, typer.Option("--not-show", help="Do not open a window (without a display nothing is shown anyway).")] = False,
    skip_type: Annotated[Optional[list[str]], typer.Option("--skip-type", help="Pipeline steps to leave out (several allowed). Default: DefaultFormatBundle Normalize Collect; skipping Normalize undoes it so colours are right.")] = None,
    show_interval: Annotated[float, typer.Option("--show-interval", min=0.0, help="Seconds each image is shown.")] = 2.0,
    max_images: Annotated[Optional[int], typer.Option("--max-images", min=1, help="Draw only the first N images.")] = None,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the files written as one JSON object on stdout.")] = False,
) -> None:
    """Draw training images after the training pipeline, with their ground truth.

    Augmentations included; ground-truth boxes, labels and masks; the images are written to
    --output-dir and/or shown (only when a display exists)."""
    from detcli.config import load_config, resolve_preset_path
    from detcli.tools.browse import browse_dataset as run

    cfg = load_config(str(resolve_preset_path(preset)), cfg_options)
    result = run(cfg, output_dir, skip_types=skip_type or _DEFAULT_SKIP, show=not not_show,
                 show_interval=show_interval, max_images=max_images,
                 progress=lambda done, total: err_console.print(f"[dim]{done}/{total}[/]") if done % 50 == 0 or done == total else None)
    if json_out:
        print_json({"num_images": result.num_images, "shown": result.shown, "files": [str(f) for f in result.files]})
        return
    where = f" into {result.output_dir}" if result.output_dir is not None else ""
    typer.echo(f"drew {result.num_images} images{where}{' (shown)' if result.shown else ''}")


@handle_errors
def analyze_results(
    preset: Annotated[str, typer.Argument(help="Preset name or YAML file whose data.test holds the ground truth.")],
    results: Annotated[str, typer.Argument(help="COCO results JSON (as `det test --out` writes; - reads stdin).", metavar="RESULTS.json")],
    show_dir: Annotated[str, typer.Argument(help="Folder for the painted images: SHOW_DIR/good and SHOW_DIR/bad.")],
    topk: Annotated[int, typer.Option("--topk", min=1, help="How many best and worst images to paint.")] = 20,
    show_score_thr: Annotated[float, typer.Option("--show-score-thr", help="Detections below this score are not drawn (all count for the mAP).")] = 0.0,
    metric: Annotated[str, typer.Option("--metric", help="What images are ranked by: bbox (single-image mAP@[.5:.95]).")] = "bbox",
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print every image's mAP and the top-k lists as JSON on stdout.")] = False,
) -> None:
    """Paint the best and worst test images by single-image mAP.

    The mAP of an image is the mean over IoU 0.50:0.95 of the per-class area AP (classes with ground
    truth in the image). The top-k best go to SHOW_DIR/good, the worst to SHOW_DIR/bad, with ground
    truth and detections drawn; file names carry the rank and the mAP."""
    from detcli.config import load_config, resolve_preset_path
    from detcli.tools import analyze_results as run

    cfg = load_config(str(resolve_preset_path(preset)), cfg_options)
    result = run(cfg, results, show_dir, topk=topk, show_score_thr=show_score_thr, metric=metric)
    if json_out:
        print_json({"images": [s.to_dict() for s in result.scores], "good": [s.to_dict() for s in result.good],
                    "bad": [s.to_dict() for s in result.bad],
                    "files": {"good": [str(f) for f in result.good_files], "bad": [str(f) for f in result.bad_files]}})
        return
    mean = sum(s.map for s in result.scores) / len(result.scores)
    typer.echo(f"{len(result.scores)} images, mean single-image mAP {mean:.4f}")
    for title, items, folder in (("best", result.good, "good"), ("worst", result.bad, "bad")):
        typer.echo(f"{title} {len(items)} ({result.show_dir / folder}): "
                   + ", ".join(f"{s.filename} {s.map:.3f}" for s in items[:5]) + (" ..." if len(items) > 5 else ""))
