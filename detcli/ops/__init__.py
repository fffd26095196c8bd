"""Detection ops behind one entry point: NMS and RoIAlign (torchvision.ops or CuPy kernels)."""

from detcli.ops.dispatch import (
    BACKEND_NAMES,
    active_backend_name,
    available_backends,
    requested_backend,
    set_backend,
    use_backend,
)
from detcli.ops.nms import batched_nms, multiclass_nms, nms
from detcli.ops.roi_align import RoIAlign, roi_align

__all__ = [
    "BACKEND_NAMES",
    "RoIAlign",
    "active_backend_name",
    "available_backends",
    "batched_nms",
    "multiclass_nms",
    "nms",
    "requested_backend",
    "roi_align",
    "set_backend",
    "use_backend",
]
