"""Photometric transforms: Normalize, PhotoMetricDistortion and YOLOXHSVRandomAug (image only, boxes untouched)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from detcli.data.transforms.compose import get_rng
from detcli.registry import TRANSFORMS


@TRANSFORMS.register()
class Normalize:
    """``img = (img[..., ::-1] if to_rgb else img) - mean) / std`` as float32.

    Adds ``img_norm_cfg = {mean, std, to_rgb}``.

    Args:
        mean: per-channel mean, in the channel order *after* the optional BGR→RGB swap.
        std: per-channel standard deviation (same order).
        to_rgb: swap BGR to RGB first.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], to_rgb: bool = True) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean {list(mean)} and std {list(std)} differ in length")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std must not contain 0, got {list(std)}")
        self.to_rgb = to_rgb

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        for key in results.get("img_fields", ["img"]):
            img = results[key].astype(np.float32)
            if self.to_rgb and img.ndim == 3:
                img = img[..., ::-1]
            results[key] = (img - self.mean) / self.std  # (H, W, C) float32
        results["img_norm_cfg"] = {"mean": self.mean.tolist(), "std": self.std.tolist(), "to_rgb": self.to_rgb}
        return results

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()}, to_rgb={self.to_rgb})"


@TRANSFORMS.register()
class PhotoMetricDistortion:
    """Random brightness, contrast, saturation, hue and channel swap (mmdet order).

    Each step runs with probability 0.5: brightness; contrast (mode 0); BGR→HSV; saturation;
    hue; HSV→BGR; contrast (mode 1, when mode 0 was not chosen); random channel swap. The image
    becomes float32 (clipped to [0, 255] at the end).

    Args:
        brightness_delta: add ``U(-delta, delta)``.
        contrast_range: multiply by ``U(lo, hi)``.
        saturation_range: multiply S by ``U(lo, hi)``.
        hue_delta: add ``U(-delta, delta)`` degrees to H.
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = (float(v) for v in contrast_range)
        self.saturation_lower, self.saturation_upper = (float(v) for v in saturation_range)
        self.hue_delta = hue_delta

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        rng = get_rng(results)
        img = results["img"].astype(np.float32)  # (H, W, 3) BGR
        if rng.integers(2):
            img += rng.uniform(-self.brightness_delta, self.brightness_delta)
        mode = int(rng.integers(2))
        if mode == 1 and rng.integers(2):
            img *= rng.uniform(self.contrast_lower, self.contrast_upper)
        img = cv2.cvtColor(np.clip(img, 0, 255), cv2.COLOR_BGR2HSV)  # H in [0, 360), S in [0, 1]
        if rng.integers(2):
            img[..., 1] *= rng.uniform(self.saturation_lower, self.saturation_upper)
        if rng.integers(2):
            img[..., 0] += rng.uniform(-self.hue_delta, self.hue_delta)
            img[..., 0] = np.mod(img[..., 0], 360.0)
        img = cv2.cvtColor(np.clip(img, 0, [360, 1, 255]).astype(np.float32), cv2.COLOR_HSV2BGR)
        if mode == 0 and rng.integers(2):
            img *= rng.uniform(self.contrast_lower, self.contrast_upper)
        if rng.integers(2):
            img = img[..., rng.permutation(3)]
        results["img"] = np.ascontiguousarray(np.clip(img, 0, 255), dtype=np.float32)
        return results

    def __repr__(self) -> str:
        return (f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
                f"contrast_range=({self.contrast_lower}, {self.contrast_upper}), "
                f"saturation_range=({self.saturation_lower}, {self.saturation_upper}), hue_delta={self.hue_delta})")


@TRANSFORMS.register()
class YOLOXHSVRandomAug:
    """Random hue/saturation/value shifts (mmdet 2.x ``YOLOXHSVRandomAug``), image only.

    Gains ``U(-1, 1) * (hue_delta, saturation_delta, value_delta)``, each kept or zeroed with
    probability 1/2, truncated to integers; in OpenCV's HSV (hue 0-179) the hue wraps around and
    saturation/value are clipped to [0, 255]. The image must be 8-bit BGR (a float image is
    converted to ``uint8`` first).
    """

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30) -> None:
        self.hue_delta = hue_delta
        self.saturation_delta = saturation_delta
        self.value_delta = value_delta

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        rng = get_rng(results)
        gains = rng.uniform(-1, 1, 3) * [self.hue_delta, self.saturation_delta, self.value_delta]
        gains *= rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)
        img = results["img"]
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        results["img"] = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        return results

    def __repr__(self) -> str:
        return (f"YOLOXHSVRandomAug(hue_delta={self.hue_delta}, saturation_delta={self.saturation_delta}, "
                f"value_delta={self.value_delta})")
