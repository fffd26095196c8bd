"""Latency per image at 512x512: det's exported ONNX graph in ONNX Runtime vs det in PyTorch eager vs
torchvision's model of the same architecture in PyTorch eager.

Models: RetinaNet, FCOS, Faster R-CNN and Mask R-CNN R50-FPN, 80 classes, random init (the models
of ``benchmarks/vs_torchvision.py``: its inline dense configs and presets/{faster,mask}_rcnn_r50_fpn_1x_coco.yaml,
against torchvision's retinanet/fcos/fasterrcnn/maskrcnn_resnet50_fpn with the same settings), batch 1,
``torch.set_num_threads(2)`` and 2 ONNX Runtime intra-op threads, the three timed round-robin. On
untrained weights no score passes 0.05, so this times the network plus the cheap part of post-processing (the graph still runs
top-k, decoding and NonMaxSuppression; the two-stage graphs also run RPN NMS over 1000 proposals
and the box head on them). ``--busy`` sets the second-stage score threshold to 0 on every side for
the two-stage models, so each image keeps 100 detections and Mask R-CNN pastes 100 masks. The ONNX
graph takes the preprocessed tensor; torchvision's time includes its own normalisation transform.

Usage:
    python benchmarks/onnx_speed.py [--repeats 10] [--warmup 2] [--models retinanet,fcos,faster_rcnn,mask_rcnn]
        [--busy] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_torchvision import TWO_STAGE, build_det, build_torchvision, set_score_thr  # noqa: E402

import detcli.models  # noqa: E402,F401
from detcli.engine.onnx_export import graph_feed, trace_to_onnx  # noqa: E402
from detcli.models.deploy import deploy_model, min_opset  # noqa: E402
from detcli.structures import ImageBatch  # noqa: E402

SIZE = 512


def _medians(fns, repeats: int, warmup: int) -> list[float]:  # noqa: ANN001
    """Median seconds of each callable, run round-robin (interleaved, so a change of machine load
    hits every side alike)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            start = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--models", default="retinanet,fcos,faster_rcnn,mask_rcnn")
    parser.add_argument("--busy", action="store_true", help="two-stage models: score threshold 0 (100 detections)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x = torch.randn(1, 3, SIZE, SIZE)
    rows = []
    for name in args.models.split(","):
        det = build_det(name).eval()
        tv = build_torchvision(name, "recipe").eval()
        if args.busy and name in TWO_STAGE:
            set_score_thr(det, 0.0)
            set_score_thr(tv, 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            trace_to_onnx(deploy_model(det), x, path, min_opset(det))
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            options.log_severity_level = 3
            sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            batch = ImageBatch(x, [(SIZE, SIZE)])
            feed = graph_feed([i.name for i in sess.get_inputs()], batch)
            image = [torch.rand(3, SIZE, SIZE)]

            def tv_infer() -> None:
                with torch.inference_mode():
                    tv(image)

            t_onnx, t_det, t_tv = _medians([lambda: sess.run(None, feed), lambda: det.predict(batch), tv_infer],
                                           args.repeats, args.warmup)
        rows.append({"model": name, "onnxruntime_s": t_onnx, "det_eager_s": t_det, "torchvision_eager_s": t_tv,
                     "speedup_vs_det": t_det / t_onnx, "speedup_vs_torchvision": t_tv / t_onnx})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'model':<11} {'onnxruntime':>12} {'det eager':>10} {'tv eager':>10} {'x det':>6} {'x tv':>6}  (s/image, 512x512)")
    for r in rows:
        print(f"{r['model']:<11} {r['onnxruntime_s']:>12.3f} {r['det_eager_s']:>10.3f} {r['torchvision_eager_s']:>10.3f} "
              f"{r['speedup_vs_det']:>6.2f} {r['speedup_vs_torchvision']:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
