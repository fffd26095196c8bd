"""A stand-in for detcli.engine.inference.Predictor (one box per image) for the `det infer` tests, which need no
checkpoint. Importing this module changes nothing (pytest imports every test module before running any):
tests monkeypatch it in, subprocesses call :func:`install`."""

from __future__ import annotations

import numpy as np
import torch

import detcli.engine.inference as inference
from detcli.structures import Detections


class FakePredictor:
    def __init__(self, checkpoint: str, cfg: dict | None = None, device: str = "cpu") -> None:
        self.class_names = ("blob",)
        self.cfg: dict = {}

    def __call__(self, image: np.ndarray, filename: str = "") -> Detections:
        h, w = image.shape[:2]
        return Detections((h, w), torch.tensor([[2.0, 2.0, 20.0, 20.0]]), torch.tensor([0.9]), torch.tensor([0]))


def install() -> None:
    """Replace det's Predictor in this process (for a `det infer` subprocess)."""
    inference.Predictor = FakePredictor  # type: ignore[misc]
