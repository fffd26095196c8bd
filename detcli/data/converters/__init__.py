"""Dataset converters to COCO json (one module per source format) and the COCO file checker.

Every converter writes its json atomically and returns a :class:`ConversionResult` holding the
:class:`CheckReport` of what it wrote (see :func:`check_coco`) and the problems met in the source.
"""

from detcli.data.converters._common import (
    ConversionResult,
    ConvertedSplit,
    image_size,
    read_class_names,
)
from detcli.data.converters.check import (
    CheckIssue,
    CheckReport,
    check_coco,
    check_coco_file,
    load_coco_json,
)
from detcli.data.converters.cityscapes import CITYSCAPES_CLASSES, convert_cityscapes
from detcli.data.converters.images2coco import images_to_coco
from detcli.data.converters.labelme import convert_labelme
from detcli.data.converters.shapes import convert_shapes
from detcli.data.converters.voc import VOC_CLASSES, convert_voc
from detcli.data.converters.yolo import convert_yolo

__all__ = [
    "CITYSCAPES_CLASSES", "VOC_CLASSES", "CheckIssue", "CheckReport", "ConversionResult", "ConvertedSplit",
    "check_coco", "check_coco_file", "convert_cityscapes", "convert_labelme", "convert_shapes", "convert_voc", "convert_yolo",
    "image_size", "images_to_coco", "load_coco_json", "read_class_names",
]
