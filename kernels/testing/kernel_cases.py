"""Randomised and boundary inputs shared by the kernel tests (tests/kernels, tests/ops).

Each NMS case is ``(name, boxes float32[N, 4], scores float32[N], iou_threshold)``; each RoIAlign
case is ``(name, input float32[B, C, H, W], rois float32[K, 5], output_size, spatial_scale)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

NMS_SIZES = (0, 1, 63, 64, 65, 2000)


def random_boxes(n: int, seed: int, extent: float = 100.0, max_side: float = 30.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent  # (n, 2)
    wh = torch.rand(n, 2, generator=g) * max_side  # (n, 2)
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def nms_cases() -> list[tuple[str, Tensor, Tensor, float]]:
    cases: list[tuple[str, Tensor, Tensor, float]] = []
    for n in NMS_SIZES:
        boxes, scores = random_boxes(n, seed=n)
        for thr in (0.3, 0.5, 0.7):
            cases.append((f"random-n{n}-thr{thr}", boxes, scores, thr))
    # coarse integer grid: many exact ties of IoU and of score
    g = torch.Generator().manual_seed(7)
    xy = torch.randint(0, 20, (300, 2), generator=g).float()
    wh = torch.randint(0, 6, (300, 2), generator=g).float()
    grid_boxes = torch.cat([xy, xy + wh], dim=1)
    tied_scores = torch.randint(0, 4, (300,), generator=g).float() / 4
    for thr in (0.0, 0.25, 0.5, 1 / 3, 0.6):
        cases.append((f"integer-grid-ties-thr{thr:.3f}", grid_boxes, tied_scores, thr))
    # duplicates: identical boxes with equal and with different scores
    dup = torch.tensor([[10.0, 10, 20, 20]]).repeat(70, 1)
    cases.append(("duplicates-equal-scores", dup, torch.full((70,), 0.5), 0.5))
    cases.append(("duplicates-distinct-scores", dup, torch.linspace(0.1, 0.9, 70), 0.5))
    # IoU exactly at the threshold: [0,0,10,10] vs [0,0,10,5] has IoU 0.5; vs [0,0,10,7.5] 0.75
    at = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 7.5], [0, 0, 10, 2.5]])
    for thr in (0.5, 0.75, 0.25, 0.7499999):
        cases.append((f"iou-equals-threshold-{thr}", at, torch.tensor([0.9, 0.8, 0.7, 0.6]), thr))
    # zero-area boxes (points, lines) next to and on top of real ones: 0/0 IoU never suppresses
    zero = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 0, 10], [0, 0, 0, 10], [3, 3, 8, 3]])
    cases.append(("zero-area", zero, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), 0.0))
    cases.append(("zero-area-thr05", zero, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), 0.5))
    # a suppression chain longer than one 64-box block
    chain = torch.stack([torch.arange(150.0), torch.zeros(150), torch.arange(150.0) + 1.5, torch.ones(150)], dim=1)
    cases.append(("chain", chain, torch.linspace(1, 0, 150), 0.2))
    # spec §3.6 example
    spec = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    cases.append(("spec-thr0.5", spec, torch.tensor([0.9, 0.8, 0.7]), 0.5))
    cases.append(("spec-thr0.7", spec, torch.tensor([0.9, 0.8, 0.7]), 0.7))
    return cases


def roi_align_cases() -> list[tuple[str, Tensor, Tensor, tuple[int, int], float]]:
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 3, 11, 14, generator=g)  # (B, C, H, W)
    scale = 0.5
    rois = torch.tensor(
        [
            [0, 2.0, 3.0, 15.0, 17.0],  # inside
            [1, -6.0, -4.0, 9.0, 7.0],  # partly outside (top-left)
            [0, 20.0, 14.0, 34.0, 30.0],  # partly outside (bottom-right)
            [1, 60.0, 60.0, 80.0, 90.0],  # wholly outside
            [0, -30.0, -30.0, -10.0, -12.0],  # wholly outside (negative)
            [1, 5.0, 5.0, 5.0, 5.0],  # zero size
            [0, 7.3, 1.1, 7.9, 20.6],  # thin
            [1, 0.0, 0.0, 28.0, 22.0],  # whole map
            [0, 12.0, 9.0, 4.0, 3.0],  # x2 < x1 (malformed)
        ]
    )
    random_rois = torch.cat(
        [torch.randint(0, 2, (40, 1), generator=g).float(), torch.rand(40, 2, generator=g) * 30 - 4], dim=1
    )
    random_rois = torch.cat([random_rois, random_rois[:, 1:3] + torch.rand(40, 2, generator=g) * 20], dim=1)
    return [
        ("boundary-3x4", feats, rois, (3, 4), scale),
        ("boundary-1x1", feats, rois, (1, 1), scale),
        ("random-7x7", feats, random_rois, (7, 7), scale),
        ("random-2x5-scale1", feats, random_rois, (2, 5), 1.0),
    ]
