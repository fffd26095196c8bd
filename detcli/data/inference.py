"""Running a test pipeline on in-memory images (``det infer`` on files, video frames, webcams)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detcli.data.sample import Sample
from detcli.data.transforms.compose import RNG_KEY, Compose
from detcli.errors import DatasetError


def build_test_pipeline(pipeline_cfg: Sequence[Mapping[str, Any]]) -> Compose:
    """Build a test pipeline (``cfg["data"]["test"]["pipeline"]``); ``LoadAnnotations`` is dropped."""
    steps = [dict(step) for step in pipeline_cfg if step.get("type") != "LoadAnnotations"]
    return Compose(steps)


def prepare_image(img: np.ndarray, pipeline: Compose, filename: str = "", image_id: int = 0) -> list[Sample]:
    """Run ``pipeline`` on a BGR ``uint8 (H, W, 3)`` image (or a grey ``(H, W)`` one).

    Returns:
        One :class:`Sample` per test-time augmentation (usually one).
    """
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DatasetError(f"{filename or 'image'}: expected an (H, W, 3) or (H, W) image, got shape {arr.shape}")
    results: dict[str, Any] = {
        "img": arr,
        "img_info": {"filename": filename, "height": arr.shape[0], "width": arr.shape[1], "id": image_id},
        "img_prefix": None,
        "bbox_fields": [],
        "mask_fields": [],
        RNG_KEY: np.random.default_rng(0),
    }
    out = pipeline(results)
    if isinstance(out, Sample):
        return [out]
    if isinstance(out, list) and out and all(isinstance(s, Sample) for s in out):
        return out
    raise DatasetError(f"the test pipeline must end with Collect (it returned {type(out).__name__})")
