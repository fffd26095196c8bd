"""Train presets/quickstart.yaml, evaluate it, and print bbox mAP and the wall time (issue: ≥ 0.50 in ≤ 10 min).

Usage:
    python benchmarks/quickstart.py [--work-dir DIR] [--preset presets/quickstart.yaml] [--cfg-options k=v ...]
        Runs `det train` then `det test --json` as a user would, and prints one JSON summary line on stdout.
    python benchmarks/quickstart.py --cost-ratio [--iters N] [--preset P] [--cfg-options ...]
                                    [--baseline B] [--baseline-options k=v ...]
        The training cost of the preset relative to a baseline on a shared machine: both models train on
        the same first ``N`` batches of the preset's train split, one iteration of each in turn (forward,
        backward, AdamW step), and the ratio of the medians of their per-iteration CPU times is printed
        (CPU time, not wall time, so other load on the machine matters less). The default baseline is
        the previous quickstart recipe (the full-width ResNet-18, whose training step takes about 1.0 s on
        this project's 2-core reference machine), so ``iterations x ratio x 1.0 s`` estimates the
        training time there.

Training is deterministic (seed 0), so the mAP does not depend on the machine; run with
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

PRESET = "presets/quickstart.yaml"
#: The previous quickstart (full-width ResNet-18 FCOS at 256 px) expressed as overrides of the preset:
#: the cost reference of the README's timings.
BASELINE_OPTIONS = ["model.backbone.base_channels=64", "model.neck.in_channels=[64,128,256,512]"]


def cost_ratio(preset: str, options: list[str], baseline: str, baseline_options: list[str], iters: int) -> dict:
    """Median per-iteration CPU seconds of ``preset`` and ``baseline`` trained in turn on the same batches."""
    import torch

    from detcli.config import load_config
    from detcli.data.builder import build_dataset
    from detcli.data.loader import collate
    from detcli.engine.builders import build_model

    torch.manual_seed(0)
    runs = {"baseline": (baseline, baseline_options), "preset": (preset, options)}
    models, optims, datasets = {}, {}, {}
    for key, (path, opts) in runs.items():
        cfg = load_config(path, opts)
        model = build_model(cfg)
        model.train()
        models[key] = model
        optims[key] = torch.optim.AdamW(model.parameters(), lr=1e-4)
        datasets[key] = (build_dataset(cfg["data"]["train"], test_mode=False), int(cfg["data"].get("samples_per_gpu", 2)))
    times: dict[str, list[float]] = {key: [] for key in runs}
    for it in range(iters + 1):
        for key, model in models.items():
            dataset, per_gpu = datasets[key]
            batch = collate([dataset[it * per_gpu + k] for k in range(per_gpu)])
            start = time.process_time()
            losses = model(batch.images, batch.targets)
            loss = sum(v for k, v in losses.items() if "loss" in k)
            optims[key].zero_grad()
            loss.backward()
            optims[key].step()
            if it:  # the first iteration warms up
                times[key].append(time.process_time() - start)
    base, new = statistics.median(times["baseline"]), statistics.median(times["preset"])
    return {"iters": iters, "preset": preset, "options": options, "baseline": baseline,
            "baseline_options": baseline_options, "baseline_cpu_s_per_iter": round(base, 3),
            "preset_cpu_s_per_iter": round(new, 3), "ratio": round(new / base, 3)}


def train_and_test(preset: str, work_dir: str, cfg_options: list[str], target: float) -> dict:
    det = [sys.executable, "-m", "detcli"]
    overrides = ["--cfg-options", *cfg_options] if cfg_options else []
    env = dict(os.environ)
    start = time.perf_counter()
    subprocess.run([*det, "train", preset, "--work-dir", work_dir, "--no-validate", *overrides], check=True, env=env)
    trained = time.perf_counter()
    ckpt = str(Path(work_dir) / "latest.pth")
    out = subprocess.run([*det, "test", preset, ckpt, "--json", *overrides], check=True, env=env,
                         capture_output=True, text=True)
    end = time.perf_counter()
    metrics = json.loads(out.stdout)
    return {
        "preset": preset,
        "cfg_options": cfg_options,
        "bbox_mAP": metrics["bbox_mAP"],
        "bbox_mAP_50": metrics["bbox_mAP_50"],
        "train_seconds": round(trained - start, 1),
        "test_seconds": round(end - trained, 1),
        "total_minutes": round((end - start) / 60, 2),
        "target": f"bbox_mAP >= {target} within 10 minutes",
        "met": metrics["bbox_mAP"] >= target and (end - start) <= 600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/quickstart_bench")
    parser.add_argument("--preset", default=PRESET)
    parser.add_argument("--cfg-options", nargs="*", default=[])
    parser.add_argument("--cost-ratio", action="store_true", help="measure the per-iteration cost ratio only")
    parser.add_argument("--iters", type=int, default=10, help="iterations per model for --cost-ratio")
    parser.add_argument("--baseline", default=PRESET, help="baseline preset for --cost-ratio")
    parser.add_argument("--baseline-options", nargs="*", default=None,
                        help="overrides of the baseline (default: the previous full-width quickstart)")
    args = parser.parse_args()
    if args.cost_ratio:
        base_opts = BASELINE_OPTIONS if args.baseline_options is None else args.baseline_options
        summary = cost_ratio(args.preset, args.cfg_options, args.baseline, base_opts, args.iters)
    else:
        summary = train_and_test(args.preset, args.work_dir, args.cfg_options, 0.50)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
