"""Typed structures shared by every layer of det (torch; masks also use numpy, OpenCV and pycocotools)."""

from detcli.structures.boxes import Boxes, BoxFormat, box_iou, box_overlaps, convert
from detcli.structures.instances import Detections, GroundTruth, ImageBatch, ImageMeta
from detcli.structures.masks import BitmapMasks, PolygonMasks, polygons_to_bitmap

__all__ = [
    "BitmapMasks",
    "BoxFormat",
    "Boxes",
    "Detections",
    "GroundTruth",
    "ImageBatch",
    "ImageMeta",
    "PolygonMasks",
    "box_iou",
    "box_overlaps",
    "convert",
    "polygons_to_bitmap",
]
