"""`det optimize-anchors`: fit anchors to a preset's training boxes and print a ready --cfg-options line."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import handle_errors, print_json


@handle_errors
def optimize_anchors(
    preset: Annotated[str, typer.Argument(help="Preset name or YAML file (an anchor-based model: RetinaNet, RPN).")],
    input_shape: Annotated[tuple[int, int], typer.Option("--input-shape", help="W H the boxes are resized to (keep-ratio as the preset's Resize).", metavar="W H")],
    algorithm: Annotated[str, typer.Option("--algorithm", help="k-means (IoU distance) or differential_evolution.")] = "k-means",
    iters: Annotated[int, typer.Option("--iters", min=0, help="k-means iterations / differential-evolution generations.")] = 1000,
    num_anchors: Annotated[Optional[int], typer.Option("--num-anchors", min=1, help="Number of YOLO-style anchors (default: anchors per location of the preset).")] = None,
    output_dir: Annotated[str, typer.Option("--output-dir", help="Folder of anchor_optimize_result.json.")] = ".",
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")] = False,
) -> None:
    """Fit anchors to the ground-truth boxes of data.train.

    Prints YOLO-style anchors (w, h) and tunes the AnchorGenerator's scales and ratios, scored by the
    best possible recall (BPR) under the preset's own assigner before and after; writes
    anchor_optimize_result.json and a --cfg-options line to paste. Anchor-free presets (FCOS) are refused.
    """
    from detcli.config import load_config, resolve_preset_path
    from detcli.tools.anchors import optimize_anchors as run

    cfg = load_config(str(resolve_preset_path(preset)), cfg_options)
    result = run(cfg, algorithm, input_shape, iters=iters, num_anchors=num_anchors, output_dir=output_dir)
    if json_out:
        print_json({**result.to_dict(), "output": str(result.output)})
        return
    b, a = result.score_before, result.score_after
    echo = typer.echo
    echo(f"boxes collected: {result.num_boxes} from {result.num_images} images at {result.input_shape[0]}x{result.input_shape[1]}")
    echo(f"anchors ({result.algorithm}, w x h): " + " ".join(f"{w:g}x{h:g}" for w, h in result.anchors))
    echo(f"  average IoU {result.anchors_mean_iou:.4f}, recall at IoU >= {result.iou_thr:g}: {result.anchors_recall:.4f}")
    echo(f"model.{result.head}.anchor_generator under {result.assigner}:")
    echo(f"  before: {result.before.to_dict()}")
    echo(f"          average IoU {b.mean_iou:.4f}  best possible recall {b.bpr:.4f}  (strict, IoU >= {result.iou_thr:g}: {b.strict_recall:.4f})")
    echo(f"  after:  {result.after.to_dict()}")
    echo(f"          average IoU {a.mean_iou:.4f}  best possible recall {a.bpr:.4f}  (strict, IoU >= {result.iou_thr:g}: {a.strict_recall:.4f})")
    if not result.improved:
        echo("  (no better setting found: the preset's settings are kept)")
    echo(f"wrote {result.output}")
    echo(f"--cfg-options {result.cfg_options}")
