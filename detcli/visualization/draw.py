"""Headless drawing of detections and ground truth on BGR images (OpenCV only, no GUI calls)."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from detcli.fileio import atomic_output
from detcli.structures import Detections, GroundTruth

_MASK_ALPHA = 0.45
_IGNORE_COLOR = (160, 160, 160)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed, well-spread BGR colour for class ``label`` (golden-ratio hue steps)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a BGR image (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr).copy()


def _class_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class {label}"


def _draw_label(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    """Text on a filled box above ``(x, y)`` (inside the image), black or white for contrast."""
    thickness = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    h, w = img.shape[:2]
    x = int(min(max(x, 0), max(w - tw - 2, 0)))
    top = y - th - base - 2
    if top < 0:  # no room above the box: put the label inside it
        top = min(max(y, 0), max(h - th - base - 2, 0))
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 2), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    text_color = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, text_color, thickness,
                cv2.LINE_AA)


def _blend_masks(img: np.ndarray, masks: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> None:
    """Tint ``img`` in place; masks share its top-left corner (a padded canvas is cut to the image)."""
    h, w = img.shape[:2]
    for mask, color in zip(masks, colors):
        m = mask[:h, :w].astype(bool)
        if not m.any():
            continue
        region = img[: m.shape[0], : m.shape[1]]
        region[m] = (region[m] * (1 - _MASK_ALPHA) + np.asarray(color, dtype=np.float32) * _MASK_ALPHA).astype(np.uint8)


def _style(img: np.ndarray) -> tuple[int, float]:
    size = max(img.shape[:2])
    return max(1, size // 400 + 1), max(0.4, size / 1400)


def draw_detections(image: np.ndarray, dets: Detections, class_names: Sequence[str],
                    score_thr: float = 0.3) -> np.ndarray:
    """Draw boxes (and translucent masks) scoring at least ``score_thr``, labelled ``name score``.

    Args:
        image: BGR ``uint8 (H, W, 3)``; not modified.
        dets: detections in the image's coordinates (``map_to_original`` first).
        class_names: name of each label.
        score_thr: lowest score drawn.

    Returns:
        A new BGR ``uint8 (H, W, 3)`` image.
    """
    img = _check_image(image)
    keep = dets.scores >= score_thr
    dets = dets[keep]
    thickness, scale = _style(img)
    labels = dets.labels.tolist()
    colors = [class_color(int(lab)) for lab in labels]
    if dets.masks is not None and len(dets):
        _blend_masks(img, dets.masks.detach().cpu().numpy(), colors)
    boxes = dets.boxes.tensor.detach().cpu().round().to(torch.int64).tolist()
    scores = dets.scores.tolist()
    for (x1, y1, x2, y2), lab, sc, color in zip(boxes, labels, scores, colors):
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness, cv2.LINE_8)
        _draw_label(img, f"{_class_name(int(lab), class_names)} {sc:.2f}", x1, y1, color, scale)
    return img


def draw_ground_truth(image: np.ndarray, gt: GroundTruth, class_names: Sequence[str]) -> np.ndarray:
    """Draw ground-truth boxes with class names, masks if present, ignored boxes in grey.

    Args:
        image: BGR ``uint8 (H, W, 3)`` in the coordinates of ``gt``; not modified.
        gt: the annotations; its masks (Bitmap or Polygon) may live on a padded canvas.
        class_names: name of each label.
    """
    img = _check_image(image)
    thickness, scale = _style(img)
    labels = gt.labels.tolist()
    colors = [class_color(int(lab)) for lab in labels]
    if gt.masks is not None and len(gt):
        _blend_masks(img, gt.masks.to_ndarray(), colors)
    for x1, y1, x2, y2 in gt.ignore_boxes.tensor.round().to(torch.int64).tolist():
        cv2.rectangle(img, (x1, y1), (x2, y2), _IGNORE_COLOR, thickness, cv2.LINE_4)
    for (x1, y1, x2, y2), lab, color in zip(gt.boxes.tensor.round().to(torch.int64).tolist(), labels, colors):
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness, cv2.LINE_8)
        _draw_label(img, _class_name(int(lab), class_names), x1, y1, color, scale)
    return img


def save_image(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Encode a BGR image by the file's extension (``.png``, ``.jpg``...) and write it atomically.

    Raises:
        ValueError: OpenCV cannot encode to that extension.
    """
    out = Path(path)
    ok, data = cv2.imencode(out.suffix or ".png", _check_image(image))
    if not ok:
        raise ValueError(f"cannot encode an image as {out.suffix!r} ({out})")
    with atomic_output(out) as tmp:
        tmp.write_bytes(data.tobytes())
    return out


def output_name(filename: str, fallback: str) -> str:
    """The base name of ``filename`` with an image extension (``.jpg`` added when it has none)."""
    name = Path(str(filename)).name or fallback
    return name if name.lower().endswith(_IMAGE_SUFFIXES) else f"{name}.jpg"


def denormalize(image: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
                to_rgb: bool = True) -> np.ndarray:
    """A normalised ``Tensor[3, H, W]`` back to a BGR ``uint8 (H, W, 3)`` image (``Normalize`` undone).

    Without ``mean``/``std`` (no Normalize in the pipeline) the values are taken as pixels.

    Example:
        >>> denormalize(torch.zeros(3, 1, 1), [10., 20., 30.], [1., 1., 1.])[0, 0].tolist()
        [30, 20, 10]
    """
    img = image.detach().float().cpu().permute(1, 2, 0).numpy()  # (H, W, C)
    if mean is not None and std is not None:
        img = img * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
        if to_rgb:
            img = img[..., ::-1]
    return np.ascontiguousarray(np.clip(np.round(img), 0, 255).astype(np.uint8))
