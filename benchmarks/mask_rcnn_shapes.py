"""Train presets/mask_rcnn_r18_fpn_shapes.yaml, evaluate bbox + segm on the shapes val split, and print
the figures with the wall time (issue 4: bbox mAP >= 0.50 and segm mAP >= 0.45 within 20 minutes).

Usage: python benchmarks/mask_rcnn_shapes.py [--work-dir DIR] [--preset PRESET] [--cfg-options k=v ...]
Runs `det train` then `det test --json` as a user would and prints one JSON summary line on stdout.
On a shared machine the wall time is inflated by other load: the summary also gives the training
speed (median seconds per iteration from the run's log, and iterations per second).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from detcli.errors import DatasetError
from detcli.evaluation.log_analysis import load_log

LIMIT_SECONDS = 20 * 60


def _seconds_per_iter(work_dir: Path) -> float | None:
    """Median ``time`` of the training records of the newest ``*.log.json`` in ``work_dir``."""
    logs = sorted(work_dir.glob("*.log.json"))
    if not logs:
        return None
    try:
        log = load_log(logs[-1])
    except DatasetError:  # no train record
        return None
    times = [float(r["time"]) for r in log.train if "time" in r]
    return statistics.median(times) if times else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", default="work_dirs/mask_rcnn_shapes_bench")
    parser.add_argument("--preset", default="presets/mask_rcnn_r18_fpn_shapes.yaml")
    parser.add_argument("--cfg-options", nargs="*", default=[])
    args = parser.parse_args()
    det = [sys.executable, "-m", "detcli"]
    overrides = ["--cfg-options", *args.cfg_options] if args.cfg_options else []
    env = dict(os.environ)
    start = time.perf_counter()
    subprocess.run([*det, "train", args.preset, "--work-dir", args.work_dir, "--no-validate", *overrides],
                   check=True, env=env)
    trained = time.perf_counter()
    ckpt = str(Path(args.work_dir) / "latest.pth")
    metrics_args = ["--metric", "bbox", "--metric", "segm"]
    out = subprocess.run([*det, "test", args.preset, ckpt, *metrics_args, "--json", *overrides],
                         check=True, env=env, capture_output=True, text=True)
    end = time.perf_counter()
    metrics = json.loads(out.stdout)
    spi = _seconds_per_iter(Path(args.work_dir))
    bbox, segm = metrics.get("bbox_mAP", 0.0), metrics.get("segm_mAP", 0.0)
    summary = {
        "preset": args.preset,
        "bbox_mAP": bbox,
        "bbox_mAP_50": metrics.get("bbox_mAP_50"),
        "segm_mAP": segm,
        "segm_mAP_50": metrics.get("segm_mAP_50"),
        "train_seconds": round(trained - start, 1),
        "test_seconds": round(end - trained, 1),
        "total_minutes": round((end - start) / 60, 2),
        "seconds_per_iter": None if spi is None else round(spi, 3),
        "iters_per_second": None if not spi else round(1 / spi, 3),
        "target": "bbox_mAP >= 0.50 and segm_mAP >= 0.45 within 20 minutes",
        "met": bbox >= 0.50 and segm >= 0.45 and (end - start) <= LIMIT_SECONDS,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
