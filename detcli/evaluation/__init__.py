"""Evaluation: COCO metrics through pycocotools and the COCO results-json format."""

from detcli.evaluation.coco import (
    ENGINES,
    FILE_METRICS,
    SUPPORTED_METRICS,
    ClasswiseAP,
    CocoEvaluation,
    check_metrics,
    detections_to_coco,
    evaluate_coco,
    format_classwise_table,
    load_results,
    write_results_json,
)
from detcli.evaluation.files import evaluate_files, plot_pr_curves, read_json_file

__all__ = [
    "ENGINES",
    "FILE_METRICS",
    "evaluate_files",
    "plot_pr_curves",
    "read_json_file",
    "SUPPORTED_METRICS",
    "ClasswiseAP",
    "CocoEvaluation",
    "check_metrics",
    "detections_to_coco",
    "evaluate_coco",
    "format_classwise_table",
    "load_results",
    "write_results_json",
]
