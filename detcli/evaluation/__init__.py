"""Evaluation: COCO metrics through pycocotools and the COCO results-json format."""

from detcli.evaluation.coco import (
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

__all__ = [
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
