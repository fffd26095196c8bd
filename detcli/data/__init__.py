"""Data layer: datasets, transforms, batching and the mapping back to original images.

Importing this package registers every dataset and transform.
"""

from detcli.data import transforms
from detcli.data.base import DetDataset, SampleKey
from detcli.data.builder import build_dataset, dry_run_dataset
from detcli.data.coco import CocoDataset
from detcli.data.geometry import map_to_original
from detcli.data.inference import build_test_pipeline, prepare_image
from detcli.data.loader import Batch, DetSampler, aspect_ratio_flags, build_dataloader, collate
from detcli.data.sample import Sample
from detcli.data.shapes import SHAPE_CLASSES, ShapesDataset, export_shapes_coco
from detcli.data.voc import VOC_CLASSES, VOCDataset
from detcli.data.wrappers import (
    ClassBalancedDataset,
    ConcatDataset,
    DatasetWrapper,
    MultiImageMixDataset,
    RepeatDataset,
)
from detcli.structures.masks import BitmapMasks, PolygonMasks

__all__ = [
    "SHAPE_CLASSES",
    "VOC_CLASSES",
    "Batch",
    "BitmapMasks",
    "ClassBalancedDataset",
    "CocoDataset",
    "ConcatDataset",
    "DatasetWrapper",
    "MultiImageMixDataset",
    "RepeatDataset",
    "VOCDataset",
    "DetDataset",
    "DetSampler",
    "aspect_ratio_flags",
    "PolygonMasks",
    "Sample",
    "SampleKey",
    "ShapesDataset",
    "build_dataloader",
    "build_dataset",
    "dry_run_dataset",
    "build_test_pipeline",
    "collate",
    "export_shapes_coco",
    "map_to_original",
    "prepare_image",
    "transforms",
]
