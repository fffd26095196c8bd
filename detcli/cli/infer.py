"""`det infer`: run a detector on images, folders, globs, videos or a webcam."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from detcli.cli._common import err_console, handle_errors, print_json, set_ops_backend


@handle_errors
def infer(
    checkpoint: Annotated[str, typer.Argument(help="A det checkpoint (.pth); zoo:PRESET (the preset's published weights); an MMDetection / torchvision checkpoint or URL with --config PRESET.")],
    inputs: Annotated[Optional[list[str]], typer.Argument(help="Images, folders, globs or videos; '-' reads paths from stdin, one per line.")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="Preset to use instead of the checkpoint's own config.")] = None,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override keys of --config: a.b.c=V.")] = None,
    out_dir: Annotated[str, typer.Option("--out-dir", help="Where annotated images and videos are written.")] = "det_outputs/infer",
    no_save: Annotated[bool, typer.Option("--no-save", help="Write no annotated images or videos.")] = False,
    score_thr: Annotated[float, typer.Option("--score-thr", help="Drop detections below this score.")] = 0.3,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    webcam: Annotated[Optional[int], typer.Option("--webcam", help="Read frames from this camera index instead of INPUTS.")] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop videos and webcams after N frames.")] = None,
    ops: Annotated[Optional[str], typer.Option("--ops", help="Ops backend: auto, cupy, torch or torchvision (default: $DET_OPS, else auto).")] = None,
) -> None:
    """Detect objects; one JSON line per image (or video frame) on stdout, drawings in --out-dir."""
    from detcli.config import load_config
    from detcli.engine.inference import InferenceSummary
    from detcli.engine.inference import infer as run_infer

    set_ops_backend(ops)
    items = list(inputs or [])
    if "-" in items:
        items = [i for i in items if i != "-"] + [line.strip() for line in sys.stdin if line.strip()]
    if not items and webcam is None:
        from detcli.cli._common import fail

        raise fail("no inputs: give images, folders, globs or videos (or '-' to read paths from stdin, or --webcam ID)")
    cfg = load_config(config, cfg_options) if config else None
    summary = InferenceSummary(None)
    count = 0
    for record in run_infer(
        checkpoint, items, cfg=cfg, out_dir=None if no_save else out_dir, score_thr=score_thr,
        device=device, webcam=webcam, max_frames=max_frames, summary=summary,
    ):
        print_json(record.to_json())
        count += 1
    where = f"; annotated outputs in {summary.out_dir}" if summary.out_dir is not None else ""
    err_console.print(f"[green]done[/]: {summary.images} images, {summary.frames} video frames{where}")
    for video in summary.videos:
        err_console.print(f"annotated video: {video}")
