"""COCO bbox evaluation speed: pycocotools vs det's engines on a made-up but realistic set.

5,000 images (640x480), 80 categories, ~7.4 ground-truth boxes per image (~37k, ~1% crowd),
100 detections per image (noisy copies of the ground truth plus random boxes, random scores).
Times evaluate+accumulate+summarize of pycocotools itself, faster-coco-eval itself, and
``det eval --gt --dt`` (``detcli.evaluation.evaluate_files``) with each ``--engine``, and compares
the 12 numbers with pycocotools'.

Usage: python benchmarks/eval_speed.py [--images 5000] [--dets 100] [--workers N] [--skip-pycocotools] [--json]

"end to end" = read both JSON files, load the results, evaluate+accumulate+summarize (what a user waits
for); det always runs end to end, the direct runs also report evaluate+accumulate+summarize alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_set(n_images: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i:06d}.jpg"} for i in range(n_images)]
    categories = [{"id": c + 1, "name": f"class{c:02d}"} for c in range(80)]
    cat_p = rng.dirichlet(np.full(80, 0.7))  # a long-tailed class distribution, like COCO
    anns, results, aid = [], [], 1
    for img in images:
        n_gt = int(rng.poisson(7.4))
        gts = []
        for _ in range(n_gt):
            w, h = np.exp(rng.uniform(np.log(6), np.log(400), 2))
            w, h = min(w, 639.0), min(h, 479.0)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice(80, p=cat_p)) + 1
            anns.append({"id": aid, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": float(w * h), "iscrowd": int(rng.random() < 0.01)})
            gts.append((cat, x, y, w, h))
            aid += 1
        dets = []
        for cat, x, y, w, h in gts:
            for _ in range(int(rng.integers(1, 4))):
                s = rng.normal(0, 0.08, 4) * [w, h, w, h]
                c = cat if rng.random() < 0.8 else int(rng.integers(1, 81))
                dets.append((c, x + s[0], y + s[1], max(1.0, w + s[2]), max(1.0, h + s[3]), float(rng.beta(5, 2))))
        while len(dets) < dets_per_image:
            w, h = np.exp(rng.uniform(np.log(6), np.log(300), 2))
            dets.append((int(rng.integers(1, 81)), rng.uniform(0, 600), rng.uniform(0, 450), w, h, float(rng.beta(1, 5))))
        for c, x, y, w, h, score in dets[:dets_per_image]:
            results.append({"image_id": img["id"], "category_id": int(c),
                            "bbox": [round(float(v), 2) for v in (x, y, w, h)], "score": round(score, 5)})
    return {"images": images, "annotations": anns, "categories": categories}, results


def run_direct(module: str, gt_path: Path, res_path: Path) -> tuple[float, float, np.ndarray]:
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco = COCO(str(gt_path))
        dt = coco.loadRes(str(res_path))
        start = time.perf_counter()
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        end = time.perf_counter()
    return end - t0, end - start, np.asarray(ev.stats)


def run_det(engine: str, gt_path: Path, res_path: Path, workers: int) -> tuple[float, float, np.ndarray]:
    """End to end: read and check both files, load the results, evaluate (evaluate+accumulate+summarize)."""
    from detcli.evaluation import evaluate_files

    start = time.perf_counter()
    ev = evaluate_files(gt_path, res_path, ["bbox"], engine=engine, workers=workers)
    elapsed = time.perf_counter() - start
    return elapsed, float("nan"), np.array(list(ev.metrics.values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--skip-pycocotools", action="store_true", help="Skip the two slow pycocotools runs (~2x100 s).")
    ap.add_argument("--workers", type=int, default=1, help="det's --workers (0: one per available core).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    gt, results = make_set(args.images, args.dets)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} GT boxes, {len(results)} detections", file=sys.stderr)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "res.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        runs = [("faster-coco-eval (direct)", lambda: run_direct("faster", gt_path, res_path)),
                ("det --engine faster-coco-eval", lambda: run_det("faster-coco-eval", gt_path, res_path, args.workers))]
        if not args.skip_pycocotools:
            runs = [("pycocotools (direct)", lambda: run_direct("pycocotools", gt_path, res_path)),
                    ("det --engine pycocotools (default)", lambda: run_det("pycocotools", gt_path, res_path, args.workers))] + runs
        for name, fn in runs:
            seconds, eval_seconds, stats = fn()
            rows[name] = (seconds, eval_seconds, stats)
            print(f"{name}: {seconds:.2f} s end to end (evaluate+accumulate+summarize: {eval_seconds:.2f} s)", file=sys.stderr)
    ref_name = "pycocotools (direct)" if "pycocotools (direct)" in rows else "faster-coco-eval (direct)"
    ref_t, _, ref_stats = rows[ref_name]
    table = []
    for name, (seconds, eval_seconds, stats) in rows.items():
        diff = float(np.abs(stats[: len(ref_stats)][:6] - ref_stats[:6]).max())
        table.append({"run": name, "seconds_end_to_end": round(seconds, 3),
                      "seconds_evaluate_accumulate": None if np.isnan(eval_seconds) else round(eval_seconds, 3),
                      "speedup_vs_" + ref_name.split()[0]: round(ref_t / seconds, 2),
                      "max_abs_diff_of_6_APs": diff, "identical_6_APs": diff == 0.0, "bbox_mAP": float(stats[0])})
    if args.json:
        print(json.dumps(table))
    else:
        for row in table:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
