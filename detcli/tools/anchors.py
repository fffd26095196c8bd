"""Anchor optimisation (``det optimize-anchors``): fit anchors to the boxes of a preset's training split.

Two results come out of one run over the ground truth of ``data.train`` (every box rescaled to
``input_shape`` the way the preset's ``Resize`` does it, keep-ratio or not):

- **YOLO-style anchors**: ``num_anchors`` ``(w, h)`` pairs, sorted by area, fitted either by k-means
  with ``1 - IoU`` of centred boxes as the distance (deterministic initialisation at area quantiles)
  or by differential evolution minimising ``1 - mean best IoU`` (mmdet ``optimize_anchors.py``).
- **AnchorGenerator settings** (RetinaNet ``model.bbox_head``, RPN ``model.rpn_head``): the scales
  (``octave_base_scale`` or ``scales``) and the ``ratios`` are tuned with the strides and the number of
  scales and ratios kept. Candidates are ranked by a fast fitness: every box is placed at its true
  position against each level's anchor grid (only the nearest anchor centre matters), and the fitness
  is ``(recall at pos_iou_thr + mean best IoU) / 2``. Before and after are then scored exactly: the
  preset's own assigner (``train_cfg.assigner``, for RPN ``train_cfg.rpn.assigner``) runs on the real
  anchor grid of every image, and the best possible recall (BPR) is the share of boxes that receive at
  least one positive anchor, low-quality matches included when the assigner allows them. The tuned
  settings replace the preset's only when their exact score is not lower, so BPR after >= before.

The library only computes and writes ``anchor_optimize_result.json``; the CLI renders it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detcli.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

ALGORITHMS = ("k-means", "differential_evolution")
RESULT_FILE = "anchor_optimize_result.json"
#: heads that may carry an AnchorGenerator, with where their assigner lives in ``model.train_cfg``
ANCHOR_HEADS = (("bbox_head", ("assigner",)), ("rpn_head", ("rpn", "assigner")))
_EPS = 1e-9


# --------------------------------------------------------------------------- collecting boxes


@dataclass
class CollectedBoxes:
    """Ground-truth boxes of a split after resizing, grouped by image.

    Attributes:
        boxes: ``float64 (N, 4)`` x1, y1, x2, y2 of every box, in resized pixels.
        image_index: ``int64 (N,)`` the image each box belongs to.
        pad_shapes: per image, the padded ``(h, w)`` the network sees.
    """

    boxes: np.ndarray
    image_index: np.ndarray
    pad_shapes: list[tuple[int, int]]

    @property
    def wh(self) -> np.ndarray:
        return self.boxes[:, 2:] - self.boxes[:, :2]


def _train_resize(pipeline: Sequence[Mapping[str, Any]]) -> tuple[bool, int]:
    """``(keep_ratio, size_divisor)`` of a training pipeline's Resize and Pad (defaults True, 1)."""
    keep_ratio, divisor = True, 1
    for step in pipeline or ():
        if not isinstance(step, Mapping):
            continue
        if step.get("type") == "Resize":
            keep_ratio = bool(step.get("keep_ratio", True))
        elif step.get("type") == "Pad" and step.get("size_divisor"):
            divisor = int(step["size_divisor"])
    return keep_ratio, divisor


def resize_factors(width: int, height: int, input_shape: tuple[int, int], keep_ratio: bool) -> tuple[float, float, int, int]:
    """``(fx, fy, new_w, new_h)`` of an image of ``width x height`` resized to ``input_shape = (W, H)``.

    With ``keep_ratio`` the long edge ends <= max(W, H) and the short edge <= min(W, H) (mmdet ``Resize``).

    Example:
        >>> resize_factors(640, 480, (320, 320), True)
        (0.5, 0.5, 320, 240)
    """
    if keep_ratio:
        from detcli.data.transforms.geometric import rescale_size

        (new_w, new_h), _ = rescale_size((width, height), input_shape)
    else:
        new_w, new_h = int(input_shape[0]), int(input_shape[1])
    return new_w / width, new_h / height, new_w, new_h


def collect_boxes(dataset: Any, input_shape: tuple[int, int], keep_ratio: bool = True, size_divisor: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> CollectedBoxes:
    """Every non-ignored ground-truth box of ``dataset``, rescaled to ``input_shape`` and clipped.

    Boxes that end up narrower or lower than 1e-3 px are dropped.
    """
    boxes, index, pads = [], [], []
    n = len(dataset)
    for i in range(n):
        info = dataset.get_img_info(i)
        ann = dataset.get_ann_info(i)
        w, h = int(info["width"]), int(info["height"])
        fx, fy, new_w, new_h = resize_factors(w, h, input_shape, keep_ratio)
        b = np.asarray(ann["bboxes"], dtype=np.float64).reshape(-1, 4) * np.array([fx, fy, fx, fy])
        b[:, 0::2] = b[:, 0::2].clip(0, new_w)
        b[:, 1::2] = b[:, 1::2].clip(0, new_h)
        b = b[((b[:, 2] - b[:, 0]) > 1e-3) & ((b[:, 3] - b[:, 1]) > 1e-3)]
        boxes.append(b)
        index.append(np.full(len(b), i, dtype=np.int64))
        d = max(1, size_divisor)
        pads.append((int(math.ceil(new_h / d) * d), int(math.ceil(new_w / d) * d)))
        if progress is not None and (i + 1) % 500 == 0:
            progress(i + 1, n)
    if not boxes or sum(len(b) for b in boxes) == 0:
        raise DatasetError("data.train: the split has no ground-truth boxes to fit anchors to")
    return CollectedBoxes(np.concatenate(boxes), np.concatenate(index), pads)


# --------------------------------------------------------------------------- YOLO-style anchors


def centred_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors that share their centre: ``wh (N, 2)``, ``anchors (..., K, 2)`` -> ``(..., N, K)``.

    Example:
        >>> centred_iou(np.array([[2., 2.]]), np.array([[2., 2.], [4., 1.]])).round(3).tolist()
        [[1.0, 0.333]]
    """
    inter = np.minimum(wh[:, None, 0], anchors[..., None, :, 0]) * np.minimum(wh[:, None, 1], anchors[..., None, :, 1])
    union = wh[:, None, 0] * wh[:, None, 1] + anchors[..., None, :, 0] * anchors[..., None, :, 1] - inter
    return inter / np.maximum(union, _EPS)


def kmeans_anchors(wh: np.ndarray, k: int, iters: int = 1000) -> np.ndarray:
    """k-means of box sizes with ``1 - IoU`` (centred) as the distance; returns ``(k, 2)`` sorted by area.

    The centres start at the area quantiles of the boxes (deterministic); a centre that loses all its
    boxes is moved to the box worst covered by the others. Stops when no box changes cluster.
    """
    if len(wh) < k:
        raise DatasetError(f"--num-anchors {k}: only {len(wh)} boxes were collected; ask for at most {len(wh)}")
    order = np.argsort(wh[:, 0] * wh[:, 1], kind="stable")
    centres = wh[order[((np.arange(k) + 0.5) / k * len(wh)).astype(int)]].copy()
    assign = np.full(len(wh), -1)
    for _ in range(max(1, iters)):
        iou = centred_iou(wh, centres)  # (N, k)
        new = iou.argmax(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = members.mean(axis=0)
            else:
                centres[j] = wh[iou.max(axis=1).argmin()]
    return centres[np.argsort(centres[:, 0] * centres[:, 1], kind="stable")]


def differential_evolution(cost: Callable[[np.ndarray], np.ndarray], bounds: np.ndarray, iters: int,
                           seed: int = 0, init: Sequence[np.ndarray] = (), popsize: int = 15,
                           mutation: tuple[float, float] = (0.5, 1.0), recombination: float = 0.7,
                           tol: float = 1e-4) -> tuple[np.ndarray, float]:
    """Minimise a vectorised ``cost`` (``(P, D) -> (P,)``) inside ``bounds (D, 2)`` by differential evolution.

    ``best1bin`` strategy with dithered mutation, ``popsize * D`` members (at least 5), the rows of
    ``init`` seeded into the population; stops after ``iters`` generations or when the spread of the
    population's costs falls below ``tol`` times their mean. Deterministic for a given ``seed``.

    Returns:
        ``(best parameters (D,), best cost)``.
    """
    rng = np.random.default_rng(seed)
    lo, hi = bounds[:, 0], bounds[:, 1]
    dim = len(bounds)
    size = max(5, popsize * dim)
    pop = lo + rng.random((size, dim)) * (hi - lo)
    for i, row in enumerate(init):
        pop[i] = np.clip(np.asarray(row, dtype=np.float64), lo, hi)
    energy = cost(pop)
    for _ in range(max(0, iters)):
        best = pop[energy.argmin()]
        picks = np.stack([rng.choice(size - 1, 2, replace=False) for _ in range(size)])
        picks += picks >= np.arange(size)[:, None]  # never the member itself
        f = rng.uniform(*mutation)
        mutant = np.clip(best + f * (pop[picks[:, 0]] - pop[picks[:, 1]]), lo, hi)
        cross = rng.random((size, dim)) < recombination
        cross[np.arange(size), rng.integers(dim, size=size)] = True
        trial = np.where(cross, mutant, pop)
        trial_energy = cost(trial)
        better = trial_energy <= energy
        pop[better], energy[better] = trial[better], trial_energy[better]
        if np.std(energy) <= tol * abs(np.mean(energy)):
            break
    i = int(energy.argmin())
    return pop[i].copy(), float(energy[i])


def anchor_set_quality(wh: np.ndarray, anchors: np.ndarray, iou_thr: float) -> tuple[float, float]:
    """``(mean best IoU, share of boxes whose best IoU >= iou_thr)`` of centred anchors ``(K, 2)``."""
    best = centred_iou(wh, anchors).max(axis=-1)
    return float(best.mean()), float((best >= iou_thr).mean())


def yolo_anchors(wh: np.ndarray, k: int, algorithm: str, iters: int, input_shape: tuple[int, int],
                 seed: int = 0) -> np.ndarray:
    """``k`` anchors ``(w, h)`` by ``algorithm`` (k-means or differential evolution), sorted by area."""
    start = kmeans_anchors(wh, k, iters if algorithm == "k-means" else 30)
    if algorithm == "k-means":
        return start
    bounds = np.array([[1.0, float(input_shape[0])], [1.0, float(input_shape[1])]] * k)

    if len(wh) > 4000:  # a fixed random subset keeps one generation cheap
        wh = wh[np.sort(np.random.default_rng(seed).choice(len(wh), 4000, replace=False))]

    def cost(pop: np.ndarray) -> np.ndarray:
        pop = pop.reshape(len(pop), k, 2)
        return np.concatenate([1.0 - centred_iou(wh, pop[i:i + 16]).max(axis=-1).mean(axis=-1)
                               for i in range(0, len(pop), 16)])

    best, _ = differential_evolution(cost, bounds, iters, seed=seed, init=[start.reshape(-1)])
    anchors = best.reshape(k, 2)
    return anchors[np.argsort(anchors[:, 0] * anchors[:, 1], kind="stable")]


# --------------------------------------------------------------------------- AnchorGenerator settings


def _list_text(values: Sequence[float]) -> str:
    """``[0.5, 1.0]`` -> ``'[0.5,1]'``: a YAML list with no spaces (one --cfg-options word)."""
    return "[" + ",".join(f"{v:g}" for v in values) + "]"


@dataclass
class GeneratorSettings:
    """The tunable part of an ``AnchorGenerator`` node: scales (octave form or list) and ratios."""

    ratios: list[float]
    octave_base_scale: float | None = None
    scales_per_octave: int | None = None
    scales: list[float] | None = None

    @property
    def scale_values(self) -> list[float]:
        if self.scales is not None:
            return list(self.scales)
        n = int(self.scales_per_octave or 1)
        return [float(self.octave_base_scale) * 2 ** (i / n) for i in range(n)]  # type: ignore[arg-type]

    def to_vector(self) -> np.ndarray:
        head = [math.log2(self.octave_base_scale)] if self.scales is None else [math.log2(s) for s in self.scales]  # type: ignore[arg-type]
        return np.array(head + [math.log2(r) for r in self.ratios])

    def from_vector(self, vec: np.ndarray) -> GeneratorSettings:
        n_scale = 1 if self.scales is None else len(self.scales)
        ratios = sorted(round(float(2 ** v), 3) for v in vec[n_scale:])
        if self.scales is None:
            return GeneratorSettings(ratios, round(float(2 ** vec[0]), 3), self.scales_per_octave)
        return GeneratorSettings(ratios, scales=sorted(round(float(2 ** v), 3) for v in vec[:n_scale]))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ratios": self.ratios}
        if self.scales is None:
            out.update(octave_base_scale=self.octave_base_scale, scales_per_octave=self.scales_per_octave)
        else:
            out["scales"] = self.scales
        return out

    def cfg_options(self, head: str) -> str:
        """The ``--cfg-options`` words that set these values on ``model.<head>.anchor_generator``."""
        prefix = f"model.{head}.anchor_generator"
        words = [f"{prefix}.ratios={_list_text(self.ratios)}"]
        if self.scales is None:
            words.append(f"{prefix}.octave_base_scale={self.octave_base_scale:g}")
        else:
            words.append(f"{prefix}.scales={_list_text(self.scales)}")
        return " ".join(words)


def _generator_geometry(gen_node: Mapping[str, Any]) -> tuple[list[tuple[float, float]], list[float], float]:
    """``(strides as (sx, sy), base sizes, center_offset)`` of an AnchorGenerator node (validated by building it)."""
    import detcli.models  # noqa: F401  (registers the prior generators)
    from detcli.registry import PRIOR_GENERATORS, build

    gen = build(gen_node, PRIOR_GENERATORS, path="anchor_generator")
    if gen.centers is not None:
        raise ConfigError("anchor_generator.centers: explicit anchor centres are not supported by optimize-anchors")
    return list(gen.strides), list(gen.base_sizes), gen.center_offset


class GridFitness:
    """Fast score of generator settings: each box against the nearest anchor centre of every level."""

    def __init__(self, boxes: np.ndarray, strides: Sequence[tuple[float, float]], base_sizes: Sequence[float],
                 center_offset: float, pos_iou_thr: float, max_boxes: int = 4000, seed: int = 0) -> None:
        if len(boxes) > max_boxes:  # a fixed random subset keeps one evaluation cheap
            boxes = boxes[np.sort(np.random.default_rng(seed).choice(len(boxes), max_boxes, replace=False))]
        self.w = boxes[:, 2] - boxes[:, 0]
        self.h = boxes[:, 3] - boxes[:, 1]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        dx, dy = [], []
        for (sx, sy), base in zip(strides, base_sizes):
            c0 = center_offset * base
            dx.append(np.abs(cx - (np.round((cx - c0) / sx) * sx + c0)))
            dy.append(np.abs(cy - (np.round((cy - c0) / sy) * sy + c0)))
        self.dx = np.stack(dx, axis=1)  # (N, L)
        self.dy = np.stack(dy, axis=1)
        self.base = np.asarray(base_sizes, dtype=np.float64)  # (L,)
        self.pos_iou_thr = pos_iou_thr

    @staticmethod
    def _overlap(size: np.ndarray, anchor: np.ndarray, offset: np.ndarray) -> np.ndarray:
        return np.clip(np.minimum(size / 2, offset + anchor / 2) - np.maximum(-size / 2, offset - anchor / 2), 0, None)

    def best_iou(self, scales: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """Best IoU of every box over all anchors: ``scales (P, S)``, ``ratios (P, R)`` -> ``(P, N)``."""
        return np.concatenate([self._best_iou(scales[i:i + 8], ratios[i:i + 8]) for i in range(0, len(scales), 8)])

    def _best_iou(self, scales: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        hr = np.sqrt(ratios)[:, :, None]  # (P, R, 1)
        aw = (scales[:, None, :] / hr).reshape(len(scales), -1)  # (P, A) in base-size units
        ah = (scales[:, None, :] * hr).reshape(len(scales), -1)
        aw = aw[:, None, None, :] * self.base[None, None, :, None]  # (P, 1, L, A)
        ah = ah[:, None, None, :] * self.base[None, None, :, None]
        w, h = self.w[None, :, None, None], self.h[None, :, None, None]  # (1, N, 1, 1)
        ix = self._overlap(w, aw, self.dx[None, :, :, None])
        iy = self._overlap(h, ah, self.dy[None, :, :, None])
        inter = ix * iy
        iou = inter / np.maximum(w * h + aw * ah - inter, _EPS)  # (P, N, L, A)
        return iou.max(axis=(2, 3))

    def score(self, settings: Sequence[GeneratorSettings]) -> np.ndarray:
        """``(recall at pos_iou_thr + mean best IoU) / 2`` of each settings (higher is better)."""
        scales = np.array([s.scale_values for s in settings])
        ratios = np.array([s.ratios for s in settings])
        best = self.best_iou(scales, ratios)
        return ((best >= self.pos_iou_thr).mean(axis=1) + best.mean(axis=1)) / 2


def _kmeans_1d(values: np.ndarray, k: int, iters: int) -> np.ndarray:
    """Sorted k-means centres of 1-D ``values``, started at quantiles (deterministic)."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(max(1, iters)):
        assign = np.abs(values[:, None] - centres[None]).argmin(axis=1)
        new = np.array([values[assign == j].mean() if np.any(assign == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def tune_generator(fitness: GridFitness, current: GeneratorSettings, wh: np.ndarray, algorithm: str,
                   iters: int, seed: int = 0) -> GeneratorSettings:
    """New settings with the same number of scales and ratios, by ``algorithm``.

    ``k-means``: the ratios are the k-means centres of the boxes' log aspect ratio (h / w); then each
    scale parameter in turn takes the best of 49 log-spaced values (two sweeps). ``differential_evolution``:
    all parameters (log2 of scales and ratios) at once, the current settings in the first population.
    """
    vec0 = current.to_vector()
    n_scale = 1 if current.scales is None else len(current.scales)
    lo = np.concatenate([np.full(n_scale, -2.0), np.full(len(current.ratios), -4.0)])
    hi = np.concatenate([np.full(n_scale, 6.0), np.full(len(current.ratios), 4.0)])

    def cost(pop: np.ndarray) -> np.ndarray:
        return 1.0 - fitness.score([current.from_vector(v) for v in pop])

    if algorithm == "differential_evolution":
        best, _ = differential_evolution(cost, np.stack([lo, hi], axis=1), iters, seed=seed, init=[vec0])
        return current.from_vector(best)
    log_ratio = np.log2(wh[:, 1] / wh[:, 0])
    vec = vec0.copy()
    vec[n_scale:] = np.clip(_kmeans_1d(log_ratio, len(current.ratios), iters), lo[n_scale:], hi[n_scale:])
    grid = np.linspace(-2.0, 6.0, 49)
    for _ in range(2):
        for j in range(n_scale):
            cands = np.repeat(vec[None], len(grid), axis=0)
            cands[:, j] = grid
            vec = cands[int(cost(cands).argmin())]
    return current.from_vector(vec)


@dataclass
class AssignerScore:
    """Exact scores of generator settings under the preset's assigner on the real anchor grids.

    Attributes:
        bpr: share of boxes with at least one positive anchor under the assigner's own rules.
        strict_recall: the same without low-quality matches (a box needs an anchor with IoU >= pos_iou_thr).
        mean_iou: mean over boxes of the best IoU with any valid anchor of its image.
    """

    bpr: float
    strict_recall: float
    mean_iou: float

    def to_dict(self) -> dict[str, float]:
        return {"bpr": round(self.bpr, 6), "strict_recall": round(self.strict_recall, 6), "mean_iou": round(self.mean_iou, 6)}


def assigner_score(collected: CollectedBoxes, gen_node: Mapping[str, Any], assigner: Any) -> AssignerScore:
    """Run ``assigner`` (a MaxIoUAssigner) on every image's anchors built from ``gen_node``."""
    import torch

    import detcli.models  # noqa: F401
    from detcli.registry import PRIOR_GENERATORS, build
    from detcli.structures import box_overlaps

    gen = build(gen_node, PRIOR_GENERATORS, path="anchor_generator")
    strict = copy.copy(assigner)
    strict.match_low_quality = False
    boxes = torch.as_tensor(collected.boxes, dtype=torch.float32)
    cache: dict[tuple[int, int], Any] = {}
    covered = strict_covered = 0
    best_sum = 0.0
    for img in np.unique(collected.image_index):
        gt = boxes[torch.as_tensor(collected.image_index == img)]
        pad = collected.pad_shapes[int(img)]
        if pad not in cache:
            sizes = [(math.ceil(pad[0] / sy), math.ceil(pad[1] / sx)) for sx, sy in gen.strides]
            anchors = torch.cat(gen.grid_priors(sizes))
            valid = torch.cat(gen.valid_flags(sizes, pad))
            cache[pad] = anchors[valid]
        anchors = cache[pad]
        for rule, counter in ((assigner, "lq"), (strict, "strict")):
            inds = rule.assign(anchors, gt).gt_inds
            n = int(torch.unique(inds[inds > 0]).numel())
            if counter == "lq":
                covered += n
            else:
                strict_covered += n
        best_sum += float(box_overlaps(gt, anchors).amax(dim=1).sum())
    total = len(collected.boxes)
    return AssignerScore(covered / total, strict_covered / total, best_sum / total)


# --------------------------------------------------------------------------- the command


@dataclass
class AnchorOptimizeResult:
    """What :func:`optimize_anchors` found; ``to_dict`` is the content of ``anchor_optimize_result.json``.

    Attributes:
        algorithm, input_shape (W, H), num_boxes, num_images.
        anchors: YOLO-style ``(w, h)`` anchors sorted by area; anchors_mean_iou / anchors_recall: their
            mean best centred IoU and share of boxes with a centred IoU >= ``iou_thr``.
        head: ``bbox_head`` or ``rpn_head``; before / after: generator settings; score_before /
            score_after: exact :class:`AssignerScore`; improved: whether ``after`` differs from ``before``.
        cfg_options: the ``--cfg-options`` words applying ``after``.
        output: the json file written.
    """

    algorithm: str
    input_shape: tuple[int, int]
    num_boxes: int
    num_images: int
    iou_thr: float
    anchors: list[list[float]]
    anchors_mean_iou: float
    anchors_recall: float
    head: str
    before: GeneratorSettings
    after: GeneratorSettings
    score_before: AssignerScore
    score_after: AssignerScore
    improved: bool
    cfg_options: str
    assigner: str
    output: Path | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "input_shape": list(self.input_shape),
            "num_boxes": self.num_boxes,
            "num_images": self.num_images,
            "iou_thr": self.iou_thr,
            "anchors": self.anchors,
            "anchors_mean_iou": round(self.anchors_mean_iou, 6),
            "anchors_recall": round(self.anchors_recall, 6),
            "anchor_generator": {
                "head": self.head,
                "assigner": self.assigner,
                "before": {**self.before.to_dict(), **self.score_before.to_dict()},
                "after": {**self.after.to_dict(), **self.score_after.to_dict()},
                "improved": self.improved,
            },
            "cfg_options": self.cfg_options,
        }


def find_anchor_head(model_cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """``(head key, AnchorGenerator node, built assigner)`` of the first anchor-based head of a model config.

    Raises:
        ConfigError: the model has no head with an ``AnchorGenerator`` (e.g. FCOS is anchor-free).
    """
    import detcli.models  # noqa: F401
    from detcli.models.assigners import MaxIoUAssigner
    from detcli.registry import MATCHERS, build

    for head_key, assigner_path in ANCHOR_HEADS:
        head = model_cfg.get(head_key)
        if not isinstance(head, Mapping) or not isinstance(head.get("anchor_generator"), Mapping):
            continue
        gen = dict(head["anchor_generator"])
        if gen.get("type") != "AnchorGenerator":
            raise ConfigError(f"model.{head_key}.anchor_generator: type {gen.get('type')!r} is not supported; "
                              "optimize-anchors tunes AnchorGenerator scales and ratios")
        node: Any = model_cfg.get("train_cfg") or {}
        for key in assigner_path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
        else:
            assigner = build(node, MATCHERS, path="model.train_cfg." + ".".join(assigner_path))
        if not isinstance(assigner, MaxIoUAssigner):
            raise ConfigError(f"model.train_cfg.{'.'.join(assigner_path)}: {type(assigner).__name__} is not supported; "
                              "the recall is scored with a MaxIoUAssigner")
        return head_key, gen, assigner
    head_type = (model_cfg.get("bbox_head") or {}).get("type", "?") if isinstance(model_cfg.get("bbox_head"), Mapping) else "?"
    raise ConfigError(
        f"model ({model_cfg.get('type', '?')} with {head_type}) has no anchor_generator in model.bbox_head or "
        "model.rpn_head: it is anchor-free, so there are no anchors to optimise; use an anchor-based preset "
        "(RetinaNet, RPN)"
    )


def optimize_anchors(
    cfg: Mapping[str, Any],
    algorithm: str,
    input_shape: tuple[int, int],
    *,
    iters: int = 1000,
    num_anchors: int | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> AnchorOptimizeResult:
    """Fit anchors to ``data.train`` of ``cfg`` (see the module doc) and write ``anchor_optimize_result.json``.

    Args:
        cfg: a resolved config with ``model`` and ``data.train``.
        algorithm: ``k-means`` or ``differential_evolution``.
        input_shape: ``(W, H)`` the boxes are rescaled to.
        iters: k-means iterations / differential-evolution generations.
        num_anchors: number of YOLO-style anchors (default: anchors per location of the preset).
        output_dir: folder of the json (None: the current directory).
        seed: seed of differential evolution.

    Raises:
        ConfigError: unknown algorithm, bad shape, an anchor-free model, an unsupported generator/assigner.
        DatasetError: no boxes in the training split.
    """
    from detcli.engine.builders import build_split
    from detcli.fileio import check_writable_file, write_json_atomic

    if algorithm not in ALGORITHMS:
        raise ConfigError(f"--algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    check_writable_file(Path(output_dir if output_dir is not None else ".") / RESULT_FILE, "result file (--output-dir)")
    if len(input_shape) != 2 or min(input_shape) < 1:
        raise ConfigError(f"--input-shape {list(input_shape)}: expected two positive integers W H")
    if iters < 0:
        raise ConfigError(f"--iters {iters}: must be >= 0")
    head, gen_node, assigner = find_anchor_head(cfg.get("model") or {})
    strides, base_sizes, center_offset = _generator_geometry(gen_node)
    current = GeneratorSettings(
        ratios=[float(r) for r in gen_node["ratios"]],
        octave_base_scale=None if gen_node.get("scales") is not None else float(gen_node["octave_base_scale"]),
        scales_per_octave=None if gen_node.get("scales") is not None else int(gen_node["scales_per_octave"]),
        scales=None if gen_node.get("scales") is None else [float(s) for s in gen_node["scales"]],
    )
    k = num_anchors if num_anchors is not None else len(current.ratios) * len(current.scale_values)
    if k < 1:
        raise ConfigError(f"--num-anchors {k}: must be >= 1")

    dataset, _, _ = build_split(cfg, "train", test_mode=False)
    keep_ratio, divisor = _train_resize(((cfg.get("data") or {}).get("train") or {}).get("pipeline") or ())
    logger.info("collecting the boxes of %d training images at input shape %dx%d", len(dataset), *input_shape)
    collected = collect_boxes(dataset, (int(input_shape[0]), int(input_shape[1])), keep_ratio, divisor,
                              progress=lambda i, n: logger.info("collected %d/%d images", i, n))
    wh = collected.wh
    logger.info("%d boxes collected; fitting %d YOLO-style anchors (%s)", len(wh), k, algorithm)
    iou_thr = float(assigner.pos_iou_thr)
    anchors = yolo_anchors(wh, k, algorithm, iters, (int(input_shape[0]), int(input_shape[1])), seed)
    mean_iou, recall = anchor_set_quality(wh, anchors, iou_thr)

    logger.info("tuning model.%s.anchor_generator (%s)", head, algorithm)
    fitness = GridFitness(collected.boxes, strides, base_sizes, center_offset, iou_thr, seed=seed)
    tuned = tune_generator(fitness, current, wh, algorithm, iters, seed)
    logger.info("scoring before/after with the preset's assigner on %d images", len(np.unique(collected.image_index)))
    score_before = assigner_score(collected, gen_node, assigner)
    tuned_node = {**gen_node, **tuned.to_dict()}
    score_after = assigner_score(collected, tuned_node, assigner)
    improved = (score_after.bpr, score_after.strict_recall, score_after.mean_iou) > (
        score_before.bpr, score_before.strict_recall, score_before.mean_iou)
    if not improved:
        logger.info("the tuned settings do not score higher under the assigner; keeping the preset's")
        tuned, score_after = current, score_before
    result = AnchorOptimizeResult(
        algorithm=algorithm, input_shape=(int(input_shape[0]), int(input_shape[1])), num_boxes=len(wh),
        num_images=len(dataset), iou_thr=iou_thr,
        anchors=[[round(float(w), 2), round(float(h), 2)] for w, h in anchors],
        anchors_mean_iou=mean_iou, anchors_recall=recall, head=head, before=current, after=tuned,
        score_before=score_before, score_after=score_after, improved=improved,
        cfg_options=tuned.cfg_options(head), assigner=repr(assigner),
    )
    out = Path(output_dir) if output_dir is not None else Path(".")
    result.output = write_json_atomic(result.to_dict(), out / RESULT_FILE, indent=2)
    return result
