"""`det test` / `det eval`: evaluate a checkpoint on a preset's test split, or a results file (`--gt/--dt`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Optional

import typer

from detcli.cli._common import RichProgress, err_console, fail, handle_errors, print_json, set_ops_backend
from detcli.cli.train import LAUNCHER_HELP, NPROC_HELP


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


def check_out_suffix(out: str | None) -> None:
    """Refuse an ``--out`` whose name does not end in ``.json``: det writes COCO results JSON only."""
    if out is None or out.lower().endswith(".json"):
        return
    from pathlib import PurePath

    suffix = PurePath(out).suffix or "no suffix"
    raise fail(f"--out {out}: det writes the results as a COCO results JSON file only ({suffix} refused; "
               "MMDetection's pickle of raw results is never written); name the file *.json, e.g. --out results.json")


@handle_errors
def test(
    args: Annotated[Optional[list[str]], typer.Argument(help="[PRESET] CHECKPOINT: a det checkpoint carries its config; MMDetection / torchvision checkpoints and URLs need the PRESET; `PRESET zoo` uses the preset's published weights. Not used with --gt/--dt.", metavar="[PRESET] CHECKPOINT", show_default=False)] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "--eval", help="Metrics (several allowed): bbox, segm (models with masks), proposal (COCO), mAP, recall (VOC: per-class AP table, recall@N@IoU); default: the config's evaluation.metric, else mAP for VOCDataset and bbox otherwise. With --gt/--dt: bbox, segm, proposal.")] = None,
    gt: Annotated[Optional[str], typer.Option("--gt", help="COCO annotation file: evaluate --dt against it, no preset or model.")] = None,
    dt: Annotated[Optional[str], typer.Option("--dt", help="COCO results file (as `det test --out` writes; - reads stdin), with --gt.")] = None,
    classwise: Annotated[bool, typer.Option("--classwise", help="Also print the per-class AP table.")] = False,
    plot_dir: Annotated[Optional[str], typer.Option("--plot-dir", help="With --gt/--dt: write per-class precision-recall PNGs here.")] = None,
    engine: Annotated[str, typer.Option("--engine", help="With --gt/--dt: det (default: pycocotools' numbers bit for bit, several times faster than faster-coco-eval), pycocotools (the reference itself) or faster-coco-eval (APs may differ by ~1e-16).")] = "det",
    out: Annotated[Optional[str], typer.Option("--out", help="Write detections as a COCO results JSON file.")] = None,
    format_only: Annotated[bool, typer.Option("--format-only", help="Only write --out; do not evaluate.")] = False,
    show_dir: Annotated[Optional[str], typer.Option("--show-dir", help="Write images with drawn detections here.")] = None,
    show_score_thr: Annotated[float, typer.Option("--show-score-thr", help="Score threshold of --show-dir drawings.")] = 0.3,
    eval_options: Annotated[Optional[list[str]], typer.Option("--eval-options", help="Evaluation options KEY=VALUE over the config's evaluation section: classwise=true, iou_thrs=[0.5,0.75], proposal_nums=[100,300,1000] (COCO); iou_thr=0.5 or [0.5,0.75], scale_ranges=[[0,32],[32,1e5]], eval_mode=area|11points (VOC).")] = None,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    ops: Annotated[Optional[str], typer.Option("--ops", help="Ops backend: auto, cupy, torch or torchvision (default: $DET_OPS, else auto).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="With --gt/--dt: processes sharing the work (JSON parsing, disjoint classes); 0: automatic (bbox: 2 when a core is idle, else 1; segm: 1); same numbers.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as one JSON object on stdout.")] = False,
    launcher: Annotated[str, typer.Option("--launcher", help=LAUNCHER_HELP)] = "auto",
    nproc: Annotated[Optional[int], typer.Option("--nproc", help=NPROC_HELP, min=1)] = None,
    backend: Annotated[str, typer.Option("--backend", help="pytorch (a checkpoint) or onnxruntime (a model from det export-onnx).")] = "pytorch",
) -> None:
    """Evaluate a checkpoint on the preset's test split (COCO bbox/segm/proposal metrics, VOC mAP/recall), optionally
    writing results (boxes and RLE masks) and drawings; or evaluate a results file with --gt/--dt."""
    check_out_suffix(out)  # before anything runs (also before --nproc spawns workers)
    if nproc is not None and nproc > 1:
        from detcli.engine.dist import launch_local, strip_option

        raise typer.Exit(launch_local(nproc, strip_option(sys.argv[1:], "--nproc")))
    args = list(args or [])
    if gt is not None or dt is not None:
        _eval_files(args, gt, dt, metric, classwise, plot_dir, engine, workers, json_out,
                    mixed={"--out": out, "--format-only": format_only, "--show-dir": show_dir, "--eval-options": eval_options,
                           "--cfg-options": cfg_options})
        return
    if plot_dir is not None or engine != "det":
        raise fail("--plot-dir and --engine work with --gt ANN.json --dt RESULTS.json only")
    _test_checkpoint(args, metric=metric, classwise=classwise, out=out, format_only=format_only, show_dir=show_dir,
                     show_score_thr=show_score_thr, eval_options=eval_options, cfg_options=cfg_options, device=device,
                     ops=ops, json_out=json_out, launcher=launcher, backend=backend)


def _test_checkpoint(
    args: list[str], *, metric: list[str] | None, classwise: bool, out: str | None, format_only: bool,
    show_dir: str | None, show_score_thr: float, eval_options: list[str] | None, cfg_options: list[str] | None,
    device: str, ops: str | None, json_out: bool, launcher: str, backend: str,
) -> None:
    """`det test [PRESET] CHECKPOINT`: a model on the preset's (or the checkpoint's) test split."""
    from detcli.engine import resolve_test_config
    from detcli.engine import test as run_test

    set_ops_backend(ops)
    if len(args) not in (1, 2):
        raise fail(f"expected [PRESET] CHECKPOINT, got {len(args)} arguments: {' '.join(args)}")
    checkpoint = args[-1]
    cfg = resolve_test_config(checkpoint, args[0] if len(args) == 2 else None, cfg_options, backend)
    if format_only and not out:
        raise fail("--format-only needs --out FILE.json to write the results to")
    from detcli.engine.evaluation import EVAL_OPTIONS, check_eval_options

    options = parse_eval_options(eval_options)
    unknown = set(options) - set(EVAL_OPTIONS)
    if unknown:
        raise fail(f"--eval-options: unknown option(s) {', '.join(sorted(unknown))} (supported: {', '.join(EVAL_OPTIONS)})")
    check_eval_options(options)  # value types and ranges, before the model runs
    with RichProgress() as progress:
        result = run_test(
            cfg,
            checkpoint,
            metrics=list(metric) if metric else None,
            eval_options=options,
            out=out,
            format_only=format_only,
            show_dir=show_dir,
            show_score_thr=show_score_thr,
            classwise=classwise or bool(options.get("classwise", False)),
            device=device,
            progress=progress,
            launcher=launcher,
            backend=backend,
        )
    if getattr(result, "rank", 0) != 0:
        return  # rank 0 reports for the job
    if json_out:
        data: dict[str, object] = dict(result.metrics)
        map_tables = getattr(result, "map_tables", {})
        if map_tables:
            data["per_class"] = [{"prefix": prefix, **table.to_dict()}
                                 for prefix, tables in map_tables.items() for table in tables]
        print_json(data)
        return
    if result.summary:
        typer.echo(result.summary.rstrip("\n"))
    if result.classwise_table:
        typer.echo(result.classwise_table.rstrip("\n"))
    _echo_map_tables(getattr(result, "map_tables", {}))
    _echo_metrics(result.metrics)
    if out:
        err_console.print(f"results written to {out}")


def _echo_map_tables(map_tables: dict[str, list[object]]) -> None:
    """The VOC per-class tables (mmdet's print_map_summary), one per IoU threshold / scale range."""
    from detcli.evaluation.voc import format_map_table, table_title

    for prefix, tables in map_tables.items():
        for table in tables:
            typer.echo(f"--- {prefix}{table_title(table)} ---")  # type: ignore[arg-type]
            typer.echo(format_map_table(table))  # type: ignore[arg-type]


def _echo_metrics(metrics: Mapping[str, object]) -> None:
    for key, value in metrics.items():
        typer.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


def _eval_files(
    args: list[str], gt: str | None, dt: str | None, metric: list[str] | None, classwise: bool,
    plot_dir: str | None, engine: str, workers: int, json_out: bool, mixed: dict[str, object],
) -> None:
    """`det eval --gt ANN.json --dt RESULTS.json`: no preset, no checkpoint."""
    from detcli.engine import evaluate_results_file
    from detcli.evaluation import format_classwise_table

    if args:
        raise fail(
            f"--gt/--dt evaluate a results file without a model: drop the positional argument(s) {' '.join(args)} "
            "(or drop --gt/--dt to evaluate a checkpoint)"
        )
    if gt is None or dt is None:
        raise fail("--gt and --dt go together: det eval --gt ANN.json --dt RESULTS.json [--metric bbox segm]")
    used = [k for k, v in mixed.items() if v]
    if used:
        raise fail(f"{', '.join(used)} need a model; with --gt/--dt only --metric, --classwise, --plot-dir, --engine, --json apply")
    evaluation = evaluate_results_file(gt, dt, metric, classwise=classwise, engine=engine, plot_dir=plot_dir,
                                       workers=workers)
    if json_out:
        data: dict[str, object] = dict(evaluation.metrics)
        if classwise:
            data["classwise"] = {m: {r.name: r.ap for r in rows} for m, rows in evaluation.classwise.items()}
        if plot_dir is not None:
            data["plots"] = evaluation.plots
        print_json(data)
        return
    for name, summary in evaluation.summaries.items():
        typer.echo(f"--- {name} ---")
        typer.echo(summary)
    for name, rows in evaluation.classwise.items():
        typer.echo(f"--- {name} per class ---")
        typer.echo(format_classwise_table(rows))
    _echo_metrics(evaluation.metrics)
    for name, paths in evaluation.plots.items():
        err_console.print(f"{len(paths)} {name} precision-recall curves written to {plot_dir}")
