"""Train presets/atss_r18_fpn_shapes.yaml, evaluate it, and print bbox mAP and the wall time (issue 13: ≥ 0.55 in ≤ 10 min).

Usage: python benchmarks/atss_shapes.py [--work-dir DIR] [--preset presets/atss_r18_fpn_shapes.yaml] [extra --cfg-options ...]
Runs `det train` then `det test --json` as a user would, and prints one JSON summary line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", default="work_dirs/atss_shapes_bench")
    parser.add_argument("--preset", default="presets/atss_r18_fpn_shapes.yaml")
    parser.add_argument("--cfg-options", nargs="*", default=[])
    args = parser.parse_args()
    det = [sys.executable, "-m", "detcli"]
    overrides = ["--cfg-options", *args.cfg_options] if args.cfg_options else []
    env = dict(os.environ)
    start = time.perf_counter()
    subprocess.run([*det, "train", args.preset, "--work-dir", args.work_dir, "--no-validate", *overrides], check=True, env=env)
    trained = time.perf_counter()
    ckpt = str(Path(args.work_dir) / "latest.pth")
    out = subprocess.run([*det, "test", args.preset, ckpt, "--json", *overrides], check=True, env=env,
                         capture_output=True, text=True)
    end = time.perf_counter()
    metrics = json.loads(out.stdout)
    summary = {
        "preset": args.preset,
        "bbox_mAP": metrics["bbox_mAP"],
        "bbox_mAP_50": metrics["bbox_mAP_50"],
        "train_seconds": round(trained - start, 1),
        "test_seconds": round(end - trained, 1),
        "total_minutes": round((end - start) / 60, 2),
        "target": "bbox_mAP >= 0.55 within 10 minutes",
        "met": metrics["bbox_mAP"] >= 0.55 and (end - start) <= 600,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
