"""The deterministic inputs of the MMDetection golden files, shared by the generator and the det test.

Nothing here imports det or mmdet: ``make_mmdet_golden.py`` (run in a venv with mmdet 3.3.0) and
``tests/models/test_mmdet_golden.py`` (det's venv) both load this file by path, so the weights, images
and ground truth of a golden case are rebuilt bit for bit on either side instead of being stored.

Weights: every tensor of a checkpoint is a pure function of its MMDetection key name and shape
(:func:`make_tensor`), drawn from ``numpy.random.default_rng(seed_of(name))`` in float64:

- conv / linear weights ``N(0, 1) * sqrt(1 / fan_in)``;
- 1-D ``*.weight`` (BN / GN scales) ``1 + 0.1 N(0, 1)``; biases ``0.1 N(0, 1)``;
- BN ``running_mean`` ``0.1 N(0, 1)``, ``running_var`` ``U(0.5, 1.5)``, ``num_batches_tracked`` 0;
- 0-d tensors (FCOS ``Scale``) 1.0;
- sigmoid classification biases (``retina_cls``, ``conv_cls``, ``rpn_cls``, YOLOX's ``multi_level_conv_cls.<l>``)
  ``CLS_BIAS + 0.5 N(0, 1)``, and
  the softmax ``fc_cls`` bias ``0.5 N(0, 1)`` with ``BG_BIAS`` added to the background logit, so that
  some anchors / RoIs score above the test thresholds and real detections (not only noise) come out.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

#: Padded batch shape (divisible by 32) and the valid (h, w) of the two images.
PAD_SHAPE = (96, 128)
IMAGE_SIZES = ((96, 128), (70, 100))
NUM_CLASSES = 4
CLASSES = ("a", "b", "c", "d")
#: mean of the classification biases (see the module docstring).
CLS_BIAS = -4.0
CLS_BIAS_RE = re.compile(r"(retina_cls|conv_cls|rpn_cls|multi_level_conv_cls\.\d+)\.bias$")
#: softmax box heads: the background logit (last) is raised by this much.
BG_BIAS = 3.0

#: Ground truth per image: boxes (x1, y1, x2, y2), labels, and one crowd (ignore) box.
#: Picked at random (multiples of 1/8, so det's float32 ``Boxes`` hold them exactly) among boxes whose best
#: RetinaNet and RPN anchor is unique (IoU gap >= 1e-3) and that have no anchor IoU within 1e-3 of an
#: assigner threshold: float32 then makes the same assignments as float64.
GT_BOXES = (
    ((81.125, 37.875, 103.25, 86.375), (70.125, 16.375, 119.625, 42.375), (75.25, 40.875, 101.625, 77.875)),
    ((66.875, 11.875, 93.75, 41.125), (46.125, 6.375, 93.375, 29.75)),
)
GT_LABELS = ((0, 2, 1), (3, 0))
GT_IGNORE = (((10.25, 10.125, 40.375, 50.625),), ((5.125, 30.25, 40.5, 66.75),))


def seed_of(name: str) -> int:
    """64-bit seed of a parameter name (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def make_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The recipe value of the checkpoint entry ``name`` with ``shape`` (float64, or int64 counters)."""
    rng = np.random.default_rng(seed_of(name))
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if len(shape) == 0:
        return np.ones(shape, dtype=np.float64)
    if name.endswith("running_mean"):
        return 0.1 * rng.standard_normal(shape)
    if name.endswith("running_var"):
        return 0.5 + rng.random(shape)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
    if name.endswith(".weight"):
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if CLS_BIAS_RE.search(name):
        return CLS_BIAS + 0.5 * rng.standard_normal(shape)
    if name.endswith("fc_cls.bias"):
        bias = 0.5 * rng.standard_normal(shape)
        bias[-1] += BG_BIAS
        return bias
    return 0.1 * rng.standard_normal(shape)


def make_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Recipe values of every ``name -> shape`` entry."""
    return {name: make_tensor(name, tuple(shape)) for name, shape in shapes.items()}


def make_images() -> np.ndarray:
    """(2, 3, H, W) float64 normalised images: N(0, 1) inside the valid region, 0 in the padding."""
    rng = np.random.default_rng(20240601)
    images = np.zeros((len(IMAGE_SIZES), 3) + PAD_SHAPE)
    for i, (h, w) in enumerate(IMAGE_SIZES):
        images[i, :, :h, :w] = rng.standard_normal((3, h, w))
    return images


def make_masks(i: int) -> np.ndarray:
    """(N, H_pad, W_pad) uint8 masks of image ``i``: the ellipse inscribed in each GT box."""
    ys, xs = np.mgrid[0:PAD_SHAPE[0], 0:PAD_SHAPE[1]] + 0.5
    masks = []
    for x1, y1, x2, y2 in GT_BOXES[i]:
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks.append((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0).astype(np.uint8))
    return np.stack(masks)


def summarize(x: np.ndarray, step: int) -> dict[str, object]:
    """What a golden file keeps of a (B, C, ...) map: every ``step``-th channel, and whole-tensor sums."""
    return {"shape": list(x.shape), "step": step, "values": np.ascontiguousarray(x[:, ::step]),
            "sum": float(x.sum()), "sumsq": float((x * x).sum())}
