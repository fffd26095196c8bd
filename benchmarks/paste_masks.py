"""Pasting 28x28 mask probabilities into an image: det's paste_masks vs torchvision's.

Usage: python benchmarks/paste_masks.py [--num 100] [--height 800] [--width 1333] [--repeats 5]
                                        [--threads N]

Draws ``--num`` random boxes (sides 16..400 px) and random 28x28 probabilities, pastes them with
``detcli.models.mask_heads.paste_masks`` (threshold 0.5) and with torchvision's
``paste_masks_in_image`` (then thresholded at 0.5), interleaved, and prints the median seconds of
each, the speed-up and the fraction of pixels on which the two bool masks differ, as one JSON line.
The two differ slightly by design: torchvision resizes each mask to the integer box and pads it
by one pixel, det samples every pixel centre bilinearly (mmdet's semantics).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from detcli.models.mask_heads import paste_masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    h, w = args.height, args.width
    sides = torch.rand(args.num, 2, generator=gen) * 384 + 16
    corner = torch.rand(args.num, 2, generator=gen) * torch.tensor([w, h]) - sides / 2
    boxes = torch.cat([corner, corner + sides], 1)
    probs = torch.rand(args.num, 28, 28, generator=gen)

    def ours() -> torch.Tensor:
        return paste_masks(probs, boxes, (h, w), 0.5)

    def theirs() -> torch.Tensor:
        return paste_masks_in_image(probs[:, None], boxes, (h, w))[:, 0] >= 0.5

    times: dict[str, list[float]] = {"det": [], "torchvision": []}
    with torch.inference_mode():
        a, b = ours(), theirs()  # warm-up
        for _ in range(args.repeats):
            for name, fn in (("det", ours), ("torchvision", theirs)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    det_s, tv_s = statistics.median(times["det"]), statistics.median(times["torchvision"])
    print(json.dumps({
        "num_masks": args.num, "image": [h, w], "threads": torch.get_num_threads(),
        "det_s": round(det_s, 4), "torchvision_s": round(tv_s, 4), "speedup": round(tv_s / det_s, 2),
        "pixels_differing": float((a != b).float().mean()),
    }))


if __name__ == "__main__":
    main()
