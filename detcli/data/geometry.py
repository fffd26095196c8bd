"""Map predictions from the network's input space back to the original image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detcli.structures import Detections, ImageMeta


def map_to_original(dets: Detections, meta: ImageMeta) -> Detections:
    """Undo the pipeline's flip and resize on ``dets`` (inverse of RandomFlip and Resize).

    Boxes are first un-flipped inside ``meta.img_shape``, then divided by ``meta.scale_factor``
    per axis (``x / w_scale``, ``y / h_scale``), then clipped to ``meta.ori_shape``. Masks (if any,
    ``bool (N, H, W)`` at ``dets.image_size``) are cropped to ``img_shape``, un-flipped and resized
    to ``ori_shape`` (bilinear, threshold 0.5).

    Args:
        dets: detections in the coordinates of the (resized, padded) network input.
        meta: the image's meta from the pipeline.

    Returns:
        Detections with ``image_size = meta.ori_shape``.

    Example:
        A box ``[10, 20, 30, 40]`` predicted on an image resized by ``(2.0, 4.0)`` and flipped
        horizontally in ``img_shape (200, 100)`` maps to ``[35, 5, 45, 10]``.
    """
    boxes = dets.boxes
    if meta.flip and meta.flip_direction:
        boxes = boxes.flip(meta.img_shape, meta.flip_direction)
    w_scale, h_scale = float(meta.scale_factor[0]), float(meta.scale_factor[1])
    boxes = boxes.scale(1.0 / w_scale, 1.0 / h_scale)
    boxes.clip_(meta.ori_shape)
    masks = dets.masks
    if masks is not None:
        h, w = meta.img_shape
        masks = masks[:, :h, :w]  # (N, h, w)
        if meta.flip and meta.flip_direction:
            dims = {"horizontal": [2], "vertical": [1], "diagonal": [1, 2]}[meta.flip_direction]
            masks = masks.flip(dims)
        if len(masks) == 0:
            masks = torch.zeros(0, *meta.ori_shape, dtype=torch.bool, device=masks.device)
        elif tuple(masks.shape[1:]) != tuple(meta.ori_shape):
            resized = F.interpolate(masks[:, None].float(), size=tuple(meta.ori_shape), mode="bilinear",
                                    align_corners=False)  # (N, 1, H0, W0)
            masks = resized[:, 0] >= 0.5
        masks = masks.bool()
    return Detections(tuple(meta.ori_shape), boxes, dets.scores, dets.labels, masks)  # type: ignore[arg-type]
