"""`det confusion-matrix`: a results file against a preset's test split, as a heatmap and CSVs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import handle_errors, print_json


@handle_errors
def confusion_matrix(
    preset: Annotated[str, typer.Argument(help="Preset name or YAML file whose data.test holds the ground truth.")],
    results: Annotated[str, typer.Argument(help="COCO results JSON (as `det test --out` writes; - reads stdin).", metavar="RESULTS.json")],
    out_dir: Annotated[str, typer.Argument(help="Folder for confusion_matrix.png / .csv / _normalized.csv.")],
    score_thr: Annotated[float, typer.Option("--score-thr", help="Detections below this score are ignored.")] = 0.3,
    tp_iou_thr: Annotated[float, typer.Option("--tp-iou-thr", help="IoU at which a detection matches a ground-truth box.")] = 0.5,
    nms_iou_thr: Annotated[Optional[float], typer.Option("--nms-iou-thr", help="Run per-class NMS at this IoU first.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Also print the matrix (counts and row %) as a table on stdout.")] = False,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print labels, counts and normalized matrix as JSON on stdout.")] = False,
) -> None:
    """Confusion matrix of detections vs ground truth: rows GT, columns predictions, plus background."""
    from detcli.config import load_config, resolve_preset_path
    from detcli.evaluation.confusion import ORIENTATION
    from detcli.tools import confusion_matrix as compute

    cfg = load_config(str(resolve_preset_path(preset)), cfg_options)
    result = compute(cfg, results, out_dir, score_thr=score_thr, tp_iou_thr=tp_iou_thr, nms_iou_thr=nms_iou_thr)
    m = result.matrix
    if json_out:
        print_json({"orientation": ORIENTATION, "labels": m.labels, "counts": m.counts.tolist(),
                    "normalized": [[round(v, 4) for v in row] for row in m.normalized().tolist()],
                    "files": [str(result.png), str(result.csv), str(result.csv_normalized)]})
        return
    if show:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="confusion matrix: count (row %)", show_lines=False)
        table.add_column("gt \\ pred")
        for label in m.labels:
            table.add_column(label, justify="right")
        for label, crow, prow in zip(m.labels, m.counts, m.normalized()):
            table.add_row(label, *(f"{c} ({p:.0f}%)" for c, p in zip(crow, prow)))
        Console(soft_wrap=True, width=max(80, 14 * (len(m.labels) + 1))).print(table)
    typer.echo(f"orientation: {ORIENTATION}")
    for path in (result.png, result.csv, result.csv_normalized):
        typer.echo(str(path))
