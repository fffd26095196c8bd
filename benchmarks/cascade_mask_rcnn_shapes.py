"""Cascade Mask R-CNN on the shapes dataset (issue 13 §3): bbox and segm mAP above Mask R-CNN's
0.643 / 0.614 on the shapes val split, with training time at most 1.5x that of
``presets/mask_rcnn_r18_fpn_shapes.yaml``.

Usage:
    python benchmarks/cascade_mask_rcnn_shapes.py [--work-dir DIR] [--cfg-options k=v ...]
        Trains presets/cascade_mask_rcnn_r18_fpn_shapes.yaml with `det train`, evaluates bbox + segm with
        `det test --json` and prints one JSON summary line (mAPs, wall times, median s/iteration).
    python benchmarks/cascade_mask_rcnn_shapes.py --cost-ratio [--iters N]
        The training cost ratio on a shared machine: both presets' models train on the same first
        ``N`` batches of the shapes train split, one iteration of each in turn (forward, backward,
        AdamW step), and the ratio of the medians of their per-iteration CPU times is printed
        (CPU time, not wall time, so other load on the machine matters less).

Training is deterministic (seed 0), so the mAPs do not depend on the machine; run with
``OMP_NUM_THREADS=1`` on a loaded machine.
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

PRESET = "presets/cascade_mask_rcnn_r18_fpn_shapes.yaml"
BASELINE = "presets/mask_rcnn_r18_fpn_shapes.yaml"
#: Mask R-CNN's figures on the same data (README) and the allowed training-time factor.
MASK_RCNN_BBOX, MASK_RCNN_SEGM, TIME_FACTOR = 0.643, 0.614, 1.5


def cost_ratio(iters: int) -> dict:
    """Median per-iteration CPU seconds of both presets, trained in turn on the same batches."""
    import torch

    from detcli.config import load_config
    from detcli.data.builder import build_dataset
    from detcli.data.loader import collate
    from detcli.engine.builders import build_model

    torch.manual_seed(0)
    models, optims = {}, {}
    for name in (BASELINE, PRESET):
        cfg = load_config(name)
        model = build_model(cfg)
        model.train()
        models[name] = model
        optims[name] = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = load_config(PRESET)
    dataset = build_dataset(cfg["data"]["train"], test_mode=False)
    per_gpu = int(cfg["data"].get("samples_per_gpu", 2))
    times: dict[str, list[float]] = {BASELINE: [], PRESET: []}
    for it in range(iters + 1):
        batch = collate([dataset[it * per_gpu + k] for k in range(per_gpu)])
        for name, model in models.items():
            start = time.process_time()
            losses = model(batch.images, batch.targets)
            loss = sum(v for k, v in losses.items() if "loss" in k)
            optims[name].zero_grad()
            loss.backward()
            optims[name].step()
            if it:  # the first iteration warms up
                times[name].append(time.process_time() - start)
    base, cascade = statistics.median(times[BASELINE]), statistics.median(times[PRESET])
    return {"iters": iters, "mask_rcnn_cpu_s_per_iter": round(base, 3),
            "cascade_cpu_s_per_iter": round(cascade, 3), "ratio": round(cascade / base, 3),
            "target": f"ratio <= {TIME_FACTOR}", "met": cascade / base <= TIME_FACTOR}


def _seconds_per_iter(work_dir: Path) -> float | None:
    from detcli.errors import DatasetError
    from detcli.evaluation.log_analysis import load_log

    logs = sorted(work_dir.glob("*.log.json"))
    if not logs:
        return None
    try:
        log = load_log(logs[-1])
    except DatasetError:
        return None
    times = [float(r["time"]) for r in log.train if "time" in r]
    return statistics.median(times) if times else None


def train_and_test(work_dir: str, cfg_options: list[str]) -> dict:
    det = [sys.executable, "-m", "detcli"]
    overrides = ["--cfg-options", *cfg_options] if cfg_options else []
    env = dict(os.environ)
    start = time.perf_counter()
    subprocess.run([*det, "train", PRESET, "--work-dir", work_dir, "--no-validate", *overrides], check=True, env=env)
    trained = time.perf_counter()
    ckpt = str(Path(work_dir) / "latest.pth")
    out = subprocess.run([*det, "test", PRESET, ckpt, "--metric", "bbox", "--metric", "segm", "--json", *overrides],
                         check=True, env=env, capture_output=True, text=True)
    end = time.perf_counter()
    metrics = json.loads(out.stdout)
    spi = _seconds_per_iter(Path(work_dir))
    bbox, segm = metrics.get("bbox_mAP", 0.0), metrics.get("segm_mAP", 0.0)
    return {
        "preset": PRESET, "bbox_mAP": bbox, "bbox_mAP_50": metrics.get("bbox_mAP_50"), "segm_mAP": segm,
        "segm_mAP_50": metrics.get("segm_mAP_50"), "train_seconds": round(trained - start, 1),
        "test_seconds": round(end - trained, 1), "seconds_per_iter": None if spi is None else round(spi, 3),
        "target": f"bbox_mAP > {MASK_RCNN_BBOX} and segm_mAP > {MASK_RCNN_SEGM} (Mask R-CNN) within "
                  f"{TIME_FACTOR}x its training time (see --cost-ratio)",
        "accuracy_met": bbox > MASK_RCNN_BBOX and segm > MASK_RCNN_SEGM,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/cascade_mask_rcnn_shapes_bench")
    parser.add_argument("--cfg-options", nargs="*", default=[])
    parser.add_argument("--cost-ratio", action="store_true", help="measure the per-iteration cost ratio only")
    parser.add_argument("--iters", type=int, default=10, help="iterations per model for --cost-ratio")
    args = parser.parse_args()
    summary = cost_ratio(args.iters) if args.cost_ratio else train_and_test(args.work_dir, args.cfg_options)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
