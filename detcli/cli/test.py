"""`det test` / `det eval`: evaluate a checkpoint on a preset's test split."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import RichProgress, err_console, fail, handle_errors, print_json, set_ops_backend


def parse_eval_options(options: list[str] | None) -> dict[str, object]:
    """``["classwise=true", ...]`` → ``{"classwise": True}`` (YAML-typed values)."""
    from detcli.config import parse_override_value

    parsed: dict[str, object] = {}
    for item in options or []:
        if "=" not in item:
            raise fail(f"--eval-options: '{item}' is not of the form KEY=VALUE (e.g. classwise=true)")
        key, value = item.split("=", 1)
        parsed[key.strip()] = parse_override_value(value)
    return parsed


@handle_errors
def test(
    args: Annotated[list[str], typer.Argument(help="[PRESET] CHECKPOINT: the preset is optional, a checkpoint carries its config.", metavar="[PRESET] CHECKPOINT")],
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "--eval", help="Metrics: bbox, proposal (several allowed).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Write detections as a COCO results JSON file.")] = None,
    format_only: Annotated[bool, typer.Option("--format-only", help="Only write --out; do not evaluate.")] = False,
    show_dir: Annotated[Optional[str], typer.Option("--show-dir", help="Write images with drawn detections here.")] = None,
    show_score_thr: Annotated[float, typer.Option("--show-score-thr", help="Score threshold of --show-dir drawings.")] = 0.3,
    eval_options: Annotated[Optional[list[str]], typer.Option("--eval-options", help="Evaluation options, e.g. classwise=true.")] = None,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    ops: Annotated[Optional[str], typer.Option("--ops", help="Ops backend: auto, cupy, torch or torchvision (default: $DET_OPS, else auto).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object on stdout.")] = False,
    backend: Annotated[str, typer.Option("--backend", help="pytorch (a checkpoint) or onnxruntime (a model from det export-onnx).")] = "pytorch",
) -> None:
    """Evaluate a checkpoint with COCO metrics (pycocotools), optionally writing results and drawings."""
    from detcli.config import apply_overrides, check_schema, load_config, resolve_preset_path
    from detcli.engine import test as run_test

    set_ops_backend(ops)
    if len(args) not in (1, 2):
        raise fail(f"expected [PRESET] CHECKPOINT, got {len(args)} arguments: {' '.join(args)}")
    checkpoint = args[-1]
    cfg = None
    if len(args) == 2:
        source = str(resolve_preset_path(args[0]))
        cfg = load_config(source, cfg_options)
    elif cfg_options:
        from detcli.engine import load_checkpoint_config

        if backend == "onnxruntime":
            from detcli.engine.onnx_export import load_onnx_config as load_checkpoint_config
        cfg = apply_overrides(load_checkpoint_config(checkpoint), cfg_options)
        check_schema(cfg, checkpoint)
    if format_only and not out:
        raise fail("--format-only needs --out FILE.json to write the results to")
    options = parse_eval_options(eval_options)
    unknown = set(options) - {"classwise"}
    if unknown:
        raise fail(f"--eval-options: unknown option(s) {', '.join(sorted(unknown))} (supported: classwise)")
    with RichProgress() as progress:
        result = run_test(
            cfg,
            checkpoint,
            metrics=list(metric or ["bbox"]),
            out=out,
            format_only=format_only,
            show_dir=show_dir,
            show_score_thr=show_score_thr,
            classwise=bool(options.get("classwise", False)),
            device=device,
            progress=progress,
            backend=backend,
        )
    if json_out:
        print_json(result.metrics)
        return
    if result.summary:
        typer.echo(result.summary.rstrip("\n"))
    if result.classwise_table:
        typer.echo(result.classwise_table.rstrip("\n"))
    for key, value in result.metrics.items():
        typer.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if out:
        err_console.print(f"results written to {out}")
