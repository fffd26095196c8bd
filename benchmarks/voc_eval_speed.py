"""VOC mAP / recall evaluation speed on a made-up VOC2007-test-sized set.

4,952 images (500x375), 20 classes, ~2.4 ground-truth boxes per image (~12k, ~25% difficult),
100 detections per image (noisy copies of the ground truth scored higher than random boxes).
Times ``detcli.evaluation.voc.eval_map`` (vectorised, default), the same with the per-class,
per-image ``tpfp_fn=tpfp_default`` path, and ``eval_recalls`` at (100, 300, 1000) proposals,
and checks that both eval_map paths give the same mAP.

Usage: python benchmarks/voc_eval_speed.py [--images 4952] [--dets 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from detcli.evaluation.voc import eval_map, eval_recalls, tpfp_default


def make_set(n_images: int, dets_per_image: int, seed: int = 0) -> tuple[list[list[np.ndarray]], list[dict]]:
    rng = np.random.default_rng(seed)
    det_results, annotations = [], []
    for _ in range(n_images):
        n = max(1, int(rng.poisson(2.4)))
        wh = np.exp(rng.uniform(np.log(10), np.log(300), (n, 2)))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([500.0, 375.0]) - wh)
        boxes = np.hstack((xy, xy + wh)).astype(np.float32)
        labels = rng.integers(0, 20, n)
        difficult = rng.random(n) < 0.25
        annotations.append({"bboxes": boxes[~difficult], "labels": labels[~difficult],
                            "bboxes_ignore": boxes[difficult], "labels_ignore": labels[difficult]})
        k_true = min(dets_per_image, 3 * n)
        src = rng.integers(0, n, k_true)
        noisy = boxes[src] + rng.normal(0, 4, (k_true, 4))
        det_labels = np.where(rng.random(k_true) < 0.8, labels[src], rng.integers(0, 20, k_true))
        k_rand = dets_per_image - k_true
        rxy = rng.uniform(0, 400, (k_rand, 2))
        rand = np.hstack((rxy, rxy + rng.uniform(10, 200, (k_rand, 2))))
        all_boxes = np.vstack((noisy, rand)).astype(np.float32)
        all_labels = np.concatenate((det_labels, rng.integers(0, 20, k_rand)))
        scores = np.concatenate((rng.beta(5, 2, k_true), rng.beta(2, 5, k_rand))).astype(np.float32)
        det_results.append([np.hstack((all_boxes[all_labels == c], scores[all_labels == c, None])) for c in range(20)])
    return det_results, annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4952)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    det_results, annotations = make_set(args.images, args.dets)
    out: dict[str, float] = {}
    for name, kwargs in (("eval_map", {}), ("eval_map_11points_legacy", {"dataset": "voc07", "use_legacy_coordinate": True}),
                         ("eval_map_tpfp_fn", {"tpfp_fn": tpfp_default})):
        start = time.perf_counter()
        mean_ap, _ = eval_map(det_results, annotations, **kwargs)
        out[f"{name}_s"] = time.perf_counter() - start
        out[f"{name}_mAP"] = mean_ap
    start = time.perf_counter()
    proposals = [np.vstack(per_class) for per_class in det_results]
    eval_recalls([a["bboxes"] for a in annotations], proposals, (100, 300, 1000), [0.5, 0.7])
    out["eval_recalls_s"] = time.perf_counter() - start
    if out["eval_map_mAP"] != out["eval_map_tpfp_fn_mAP"]:
        raise SystemExit(f"the two eval_map paths disagree: {out['eval_map_mAP']} vs {out['eval_map_tpfp_fn_mAP']}")
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.images} images x {args.dets} detections, 20 classes")
    for key, value in out.items():
        print(f"{key:28s} {value:.4f}")


if __name__ == "__main__":
    main()
