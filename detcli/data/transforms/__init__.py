"""mmdet-style data transforms, registered in :data:`detcli.registry.TRANSFORMS`."""

from detcli.data.transforms.compose import RNG_KEY, Compose, get_rng
from detcli.data.transforms.formatting import Collect, DefaultFormatBundle, ImageToTensor, image_to_tensor
from detcli.data.transforms.geometric import (
    Pad,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    Resize,
    bbox_flip,
    rescale_size,
    torchvision_resize,
)
from detcli.data.transforms.loading import LoadAnnotations, LoadImageFromFile
from detcli.data.transforms.mix import FilterAnnotations, MixUp, Mosaic, box_candidates, find_inside_bboxes
from detcli.data.transforms.photometric import Normalize, PhotoMetricDistortion, YOLOXHSVRandomAug
from detcli.data.transforms.test_time_aug import MultiScaleFlipAug

__all__ = [
    "RNG_KEY",
    "Collect",
    "Compose",
    "DefaultFormatBundle",
    "FilterAnnotations",
    "ImageToTensor",
    "LoadAnnotations",
    "LoadImageFromFile",
    "MixUp",
    "Mosaic",
    "MultiScaleFlipAug",
    "Normalize",
    "Pad",
    "PhotoMetricDistortion",
    "RandomAffine",
    "RandomCrop",
    "RandomFlip",
    "Resize",
    "YOLOXHSVRandomAug",
    "bbox_flip",
    "box_candidates",
    "find_inside_bboxes",
    "get_rng",
    "image_to_tensor",
    "rescale_size",
    "torchvision_resize",
]
