"""Train presets/yolox_tiny_shapes.yaml from scratch, evaluate it, and print bbox mAP and the wall time
(issue 14: bbox mAP >= 0.55 on the shapes val split within 10 minutes, evaluation included).

Usage: python benchmarks/yolox_shapes.py [--work-dir DIR] [--preset presets/yolox_tiny_shapes.yaml] [--cfg-options ...]
Runs `det train --no-validate` then `det test --json` (on the EMA weights the checkpoint holds) as a
user would, and prints one JSON summary line on stdout. The accuracy is deterministic; the time
depends on the machine (time it on a quiet one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TARGET_MAP = 0.55
TARGET_SECONDS = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", default="work_dirs/yolox_shapes_bench")
    parser.add_argument("--preset", default="presets/yolox_tiny_shapes.yaml")
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
        "target": f"bbox_mAP >= {TARGET_MAP} within {TARGET_SECONDS // 60} minutes",
        "met": metrics["bbox_mAP"] >= TARGET_MAP and (end - start) <= TARGET_SECONDS,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
