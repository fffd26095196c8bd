"""torchvision detection checkpoints (``*_coco`` COCO_V1 weights) onto det's ``*_tv`` presets.

Dense detectors (RetinaNet, FCOS) in the first section, two-stage ones (Faster / Mask R-CNN) in the
second. torchvision's 91-entry COCO label space (background at 0, category ids 1..90 with gaps) is
mapped onto det's class order here.
"""

from __future__ import annotations

# ---------------------------------------------------------------- dense detectors (RetinaNet, FCOS)

# ---------------------------------------------------------------- two-stage detectors (Faster / Mask R-CNN)
