"""Peak memory of NMS on many boxes: the CuPy path's bitmask before/after chunking, and the CPU path.

Usage: python benchmarks/nms_memory.py [--num 200000] [--extent 4000] [--max-side 100] [--backend auto]

Prints one JSON line with:

- ``cupy_bitmask_bytes_unchunked``: the suppression bitmask the CuPy path allocated before chunking,
  ``n * ceil(n / 64) * 8`` bytes (one 64-bit word per box and 64-box column block);
- ``cupy_bitmask_bytes_chunked``: the largest bitmask it allocates now (``NMS_CHUNK_BOXES`` boxes at a
  time, :func:`detcli.ops.cupy_backend.nms_mask_bytes`), and ``cupy_linear_bytes`` the buffers that grow
  with ``n`` (sorted boxes, order, positions, kept boxes, keep list: about 48 bytes per box);
- ``cpu_peak_rss_mb`` / ``cpu_rss_increase_mb``: the measured peak resident set size of this process
  (``ru_maxrss``) after ``detcli.ops.nms`` on the CPU with the chosen backend, and its increase over the
  peak before the call (boxes already built), plus ``cpu_seconds`` and ``kept``.

The random boxes (corners uniform in ``--extent`` px, sides up to ``--max-side`` px) are one NMS
call, like ``det``'s class-offset batched NMS on a single large image. No GPU is needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from detcli.ops import nms, use_backend
from detcli.ops.cupy_backend import NMS_BLOCK, NMS_CHUNK_BOXES, nms_mask_bytes


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=200_000)
    parser.add_argument("--extent", type=float, default=4000.0)
    parser.add_argument("--max-side", type=float, default=100.0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "torchvision"))
    args = parser.parse_args()
    n = args.num
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=gen) * args.extent
    wh = torch.rand(n, 2, generator=gen) * args.max_side + 1
    boxes = torch.cat([xy, xy + wh], dim=1)  # (n, 4)
    scores = torch.rand(n, generator=gen)
    before = peak_rss_mb()
    start = time.perf_counter()
    with use_backend(args.backend):
        kept = nms(boxes, scores, args.threshold)
    seconds = time.perf_counter() - start
    after = peak_rss_mb()
    print(json.dumps({
        "num_boxes": n,
        "cupy_bitmask_bytes_unchunked": nms_mask_bytes(n, chunk_boxes=n),
        "cupy_bitmask_bytes_chunked": nms_mask_bytes(n),
        "cupy_chunk_boxes": NMS_CHUNK_BOXES,
        "cupy_linear_bytes": n * (16 + 8 + 8 + 16 + 8) + 8 * ((n + NMS_BLOCK - 1) // NMS_BLOCK),
        "cpu_backend": args.backend,
        "cpu_peak_rss_mb": round(after, 1),
        "cpu_rss_increase_mb": round(after - before, 1),
        "cpu_seconds": round(seconds, 2),
        "kept": int(kept.numel()),
    }))


if __name__ == "__main__":
    main()
