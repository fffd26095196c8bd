"""Typed structures shared by every layer of det (depends on torch only)."""

from detcli.structures.boxes import BoxFormat, Boxes, box_iou, box_overlaps, convert
from detcli.structures.instances import Detections, GroundTruth, ImageBatch, ImageMeta

__all__ = [
    "BoxFormat",
    "Boxes",
    "Detections",
    "GroundTruth",
    "ImageBatch",
    "ImageMeta",
    "box_iou",
    "box_overlaps",
    "convert",
]
