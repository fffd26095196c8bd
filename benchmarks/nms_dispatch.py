"""CPU NMS: the plain-PyTorch sparse path vs torchvision's kernel, and what the "auto" backend picks.

The sparse path (``detcli.ops.reference.nms_sparse``) costs per candidate pair (boxes whose
bounding ranges meet), torchvision's greedy kernel per box x kept box. Auto mode takes the sparse
path from ``TORCH_NMS_MIN_BOXES`` boxes unless the candidate pairs are more than
``TORCH_NMS_MAX_PAIR_SHARE`` of all pairs (1/16: 62 per box at 2000 boxes). The cases:

- ``random``: the ``det benchmark kernels`` boxes (0..1000 px, sides 1..101 px), few overlaps;
- ``proposals``: RPN-like boxes of one image (log-normal sides around 64 px in 512 px), one class;
- ``clustered``: detector candidates, jittered copies of 20 objects, one class;
- ``offset-*``: the two above with 80 classes offset apart, as ``batched_nms`` sends them.

Every result is checked equal to torchvision's. Median of ``--repeats`` runs, 2 torch threads.

Usage:
    python benchmarks/nms_dispatch.py [--sizes 2000,4000,8000] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from detcli.ops import nms, use_backend
from detcli.ops.dispatch import TORCH_NMS_MAX_PAIR_SHARE
from detcli.ops.reference import nms_sparse


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 1000
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100 + 1], 1)


def proposals(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 512
    wh = torch.exp(torch.randn(n, 2, generator=g) * 0.8) * 64
    return torch.cat([xy - wh / 2, xy + wh / 2], 1).clamp(0, 512)


def clustered(n: int, g: torch.Generator, objects: int = 20) -> torch.Tensor:
    base = torch.rand(objects, 2, generator=g) * 800
    base = torch.cat([base, base + 20 + torch.rand(objects, 2, generator=g) * 200], 1)
    boxes = base[torch.randint(0, objects, (n,), generator=g)] + torch.randn(n, 4, generator=g) * 8
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes


def offset(boxes: torch.Tensor, g: torch.Generator, classes: int = 80) -> torch.Tensor:
    labels = torch.randint(0, classes, (boxes.shape[0],), generator=g)
    return boxes + (labels.to(boxes) * (boxes.max() + 1))[:, None]


def pairs_per_box(boxes: torch.Tensor) -> float:
    """Candidate pairs per box, as the sparse path counts them (it raises past a cap of 0)."""
    from detcli.ops.reference import TooDenseError

    try:
        nms_sparse(boxes, torch.zeros(len(boxes)), 0.5, max_pair_share=0)
    except TooDenseError as exc:
        return exc.pairs / len(boxes)
    return 0.0


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,4000,8000")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cases = {"random": random_boxes(n, g), "proposals": proposals(n, g), "clustered": clustered(n, g)}
        cases["offset-proposals"] = offset(cases["proposals"], g)
        cases["offset-clustered"] = offset(cases["clustered"], g)
        for name, boxes in cases.items():
            scores = torch.rand(n, generator=g)
            expected = torchvision.ops.nms(boxes, scores, args.iou)
            with use_backend("auto"):
                assert torch.equal(nms(boxes, scores, args.iou), expected)
            assert torch.equal(nms_sparse(boxes, scores, args.iou), expected)
            ppb = pairs_per_box(boxes)

            def auto() -> torch.Tensor:
                with use_backend("auto"):
                    return nms(boxes, scores, args.iou)

            row = {"case": name, "boxes": n, "pairs_per_box": round(ppb, 1), "kept": int(expected.numel()),
                   "sparse_ms": median_ms(lambda: nms_sparse(boxes, scores, args.iou), args.repeats),
                   "torchvision_ms": median_ms(lambda: torchvision.ops.nms(boxes, scores, args.iou), args.repeats),
                   "auto_ms": median_ms(auto, args.repeats),
                   "auto_path": "sparse" if ppb <= TORCH_NMS_MAX_PAIR_SHARE * (n - 1) / 2 else "torchvision"}
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"CPU NMS, IoU {args.iou}, median of {args.repeats}, ms (auto: sparse path while the candidate pairs are "
          f"at most {TORCH_NMS_MAX_PAIR_SHARE:g} of all pairs)")
    print(f"{'case':<17} {'boxes':>6} {'pairs/box':>9} {'kept':>6} {'sparse':>9} {'torchvision':>11} {'auto':>9}  auto path")
    for r in rows:
        print(f"{r['case']:<17} {r['boxes']:>6} {r['pairs_per_box']:>9.1f} {r['kept']:>6} {r['sparse_ms']:>9.2f} "
              f"{r['torchvision_ms']:>11.2f} {r['auto_ms']:>9.2f}  {r['auto_path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
