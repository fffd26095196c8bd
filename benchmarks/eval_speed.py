"""COCO bbox evaluation speed: pycocotools, faster-coco-eval and det on a made-up but realistic set.

5,000 images (640x480), 80 categories, ~7.4 ground-truth boxes per image (~37k, ~1% crowd),
100 detections per image (noisy copies of the ground truth plus random boxes, random scores).

Every run is end to end (what a user waits for): read both JSON files, load the results,
evaluate+accumulate+summarize. The direct runs also report evaluate+accumulate+summarize alone.
det runs ``det eval --gt --dt`` (``detcli.evaluation.evaluate_files``) with its default settings.
The machine may be shared: faster-coco-eval and det are run ``--repeats`` times, interleaved, and
the medians are compared (pycocotools, ~90 s a run, only in the first round). Each run's 12 numbers
are compared with pycocotools' (or, with ``--skip-pycocotools``, with faster-coco-eval's).

Usage: python benchmarks/eval_speed.py [--images 5000] [--dets 100] [--repeats 5] [--workers N]
       [--engine det] [--skip-pycocotools] [--json]
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


def run_det(engine: str, gt_path: Path, res_path: Path, workers: int | None) -> tuple[float, float, np.ndarray]:
    """End to end: read and check both files, evaluate (evaluate+accumulate+summarize)."""
    from detcli.evaluation import evaluate_files

    kwargs = {} if workers is None else {"workers": workers}
    start = time.perf_counter()
    ev = evaluate_files(gt_path, res_path, ["bbox"], engine=engine, **kwargs)
    elapsed = time.perf_counter() - start
    return elapsed, float("nan"), np.asarray(ev.stats["bbox"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5, help="Interleaved runs of faster-coco-eval and det (medians reported).")
    ap.add_argument("--skip-pycocotools", action="store_true", help="Skip the slow pycocotools run (~90 s).")
    ap.add_argument("--engine", default="det", help="det's --engine (default: det, the default of det eval).")
    ap.add_argument("--workers", type=int, default=None, help="det's --workers (default: det eval's default).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    gt, results = make_set(args.images, args.dets)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} GT boxes, {len(results)} detections", file=sys.stderr)
    times: dict[str, list[float]] = {}
    eval_times: dict[str, list[float]] = {}
    stats: dict[str, np.ndarray] = {}
    det_name = f"det eval (--engine {args.engine}" + ("" if args.workers is None else f", --workers {args.workers}") + ")"
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "res.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        runs = {"faster-coco-eval": lambda: run_direct("faster", gt_path, res_path),
                det_name: lambda: run_det(args.engine, gt_path, res_path, args.workers)}
        for round_ in range(args.repeats):
            todo = list(runs.items())
            if round_ % 2:
                todo.reverse()  # alternate the order so neither always runs first
            if round_ == 0 and not args.skip_pycocotools:
                todo.insert(0, ("pycocotools", lambda: run_direct("pycocotools", gt_path, res_path)))
            for name, fn in todo:
                seconds, eval_seconds, st = fn()
                times.setdefault(name, []).append(seconds)
                eval_times.setdefault(name, []).append(eval_seconds)
                stats[name] = st
                print(f"round {round_ + 1}: {name}: {seconds:.2f} s end to end", file=sys.stderr)
    ref = "pycocotools" if "pycocotools" in stats else "faster-coco-eval"
    fast = float(np.median(times["faster-coco-eval"]))
    table = []
    for name in times:
        median = float(np.median(times[name]))
        ev = np.asarray(eval_times[name], dtype=float)
        table.append({
            "run": name,
            "runs": len(times[name]),
            "median_seconds_end_to_end": round(median, 3),
            "median_seconds_evaluate_only": None if np.isnan(ev).all() else round(float(np.nanmedian(ev)), 3),
            "ratio_to_faster_coco_eval": round(median / fast, 3),
            f"identical_12_numbers_to_{ref}": bool(np.array_equal(stats[name][:12], stats[ref][:12])),
            "bbox_mAP": float(stats[name][0]),
        })
    if args.json:
        print(json.dumps(table))
    else:
        for row in table:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        det = float(np.median(times[det_name]))
        print(f"det / faster-coco-eval = {det:.2f} s / {fast:.2f} s = {det / fast:.3f} "
              f"(det is {fast / det:.2f}x faster-coco-eval's speed; medians of {args.repeats} interleaved runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
