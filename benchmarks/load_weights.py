"""Load time of an R50 detector checkpoint: det's own, MMDetection 2.x and MMDetection 3.x (MMEngine) files.

For each file: ``torch.load(weights_only=True)`` alone (the floor; impossible for the MMEngine file, whose
``message_hub`` holds Python objects), det's safe reader (:func:`detcli.weights.read_checkpoint`), and the whole
``load_model(FILE, preset)`` that ``det test PRESET FILE`` runs (read, build the model, rename, load, report),
next to building the model alone. Weights are random (same size and layout as the model-zoo files).

Usage:
    python benchmarks/load_weights.py [--preset retinanet_r50_fpn_1x_coco] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from detcli.config import load_config
from detcli.engine.builders import build_model, load_model
from detcli.engine.checkpoint import atomic_save, make_checkpoint
from detcli.models.weight_maps.mmdet import to_mmdet_names
from detcli.weights import read_checkpoint


def write_files(cfg: dict, root: Path) -> dict[str, Path]:
    model = build_model(cfg)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    files = {"det": root / "det.pth", "mmdet2": root / "mmdet2.pth", "mmdet3": root / "mmdet3.pth"}
    atomic_save(make_checkpoint(model, epoch=12, iter=87960, config=cfg, classes=[f"c{i}" for i in range(model.num_classes)]),
                files["det"])
    mm = to_mmdet_names(sd)
    torch.save({"meta": {"mmdet_version": "2.28.2", "CLASSES": tuple(f"c{i}" for i in range(model.num_classes)),
                         "config": "model = dict(type='RetinaNet')", "epoch": 12, "iter": 87960}, "state_dict": mm},
               files["mmdet2"])
    mod = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        def __init__(self) -> None:
            self._log_history = np.arange(50, dtype=np.float64)

    HistoryBuffer.__module__ = mod.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    mod.HistoryBuffer = HistoryBuffer
    parents = {n: types.ModuleType(n) for n in ("mmengine", "mmengine.logging")}
    sys.modules.update(parents)
    sys.modules[mod.__name__] = mod
    try:
        torch.save({"meta": {"mmdet_version": "3.3.0", "epoch": np.int64(12),
                             "dataset_meta": {"classes": tuple(f"c{i}" for i in range(model.num_classes))}},
                    "state_dict": mm, "message_hub": {"log_scalars": {f"train/loss{i}": HistoryBuffer() for i in range(8)}}},
                   files["mmdet3"])
    finally:
        for name in (*parents, mod.__name__):
            sys.modules.pop(name)
    return files


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="retinanet_r50_fpn_1x_coco")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = load_config(args.preset, ["model.backbone.init_cfg=null"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(cfg, Path(tmp))
        build = median_seconds(lambda: build_model(cfg), args.repeats)
        for kind, path in files.items():
            size = path.stat().st_size / 2**20
            try:
                floor = median_seconds(lambda: torch.load(path, weights_only=True, map_location="cpu"), args.repeats)
            except Exception:  # MMEngine files: weights_only refuses the Python objects
                floor = float("nan")
            read = median_seconds(lambda: read_checkpoint(path), args.repeats)
            full = median_seconds(lambda: load_model(path, None if kind == "det" else cfg), args.repeats)
            rows.append({"file": kind, "MiB": round(size, 1), "torch_load_s": round(floor, 3),
                         "read_checkpoint_s": round(read, 3), "build_model_s": round(build, 3),
                         "load_model_s": round(full, 3)})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{args.preset}: median of {args.repeats}, {torch.get_num_threads()} threads")
    print(f"{'file':<8} {'MiB':>6} {'torch.load':>11} {'read_checkpoint':>16} {'build only':>11} {'load_model':>11}")
    for r in rows:
        print(f"{r['file']:<8} {r['MiB']:>6} {r['torch_load_s']:>11} {r['read_checkpoint_s']:>16} "
              f"{r['build_model_s']:>11} {r['load_model_s']:>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
