"""Inference latency on this CPU: YOLOX-s at 640x640 vs RetinaNet R50-FPN at 800x1333, det eager and
det's exported ONNX graph in ONNX Runtime.

Models: ``presets/yolox_s_8x8_300e_coco.yaml`` and ``presets/retinanet_r50_fpn_1x_coco.yaml`` (80 classes,
random init, no download), batch 1, each at its preset's test size (YOLOX 640x640; RetinaNet 800x1333
padded to 800x1344 by its ``size_divisor: 32``). ``torch.set_num_threads(2)`` and 2 ONNX Runtime intra-op
threads; the four timings run round-robin (interleaved, so a change of machine load hits every side
alike) and the median is reported. On untrained weights few or no scores pass the thresholds, so this times
the network plus the cheap part of post-processing (the graphs still run decoding and NonMaxSuppression).
The issue's target: YOLOX-s at least 4x faster than RetinaNet-R50 in ONNX Runtime. ``--fuse-conv-bn``
folds the BatchNorms into the convolutions of the eager models (as ``det benchmark --fuse-conv-bn``;
the ONNX graphs are exported unfused: ONNX Runtime folds them itself). YOLOX's eager time is dominated
by its many BatchNorm and Swish passes, which the fold halves.

Usage:
    python benchmarks/yolox_speed.py [--repeats 5] [--warmup 1] [--fuse-conv-bn] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detcli.config import load_config  # noqa: E402
from detcli.engine.onnx_export import graph_feed, trace_to_onnx  # noqa: E402
from detcli.models.deploy import deploy_model, min_opset  # noqa: E402
from detcli.models.fuse import fuse_conv_bn  # noqa: E402
from detcli.registry import DETECTORS, build  # noqa: E402
from detcli.structures import ImageBatch  # noqa: E402

#: name -> (preset, input (H, W))
MODELS = {
    "yolox_s": ("presets/yolox_s_8x8_300e_coco.yaml", (640, 640)),
    "retinanet_r50": ("presets/retinanet_r50_fpn_1x_coco.yaml", (800, 1344)),
}


def build_model(preset: str) -> torch.nn.Module:
    cfg = copy.deepcopy(load_config(str(ROOT / preset))["model"])
    cfg["backbone"].pop("init_cfg", None)  # random weights: no ImageNet download
    return build(cfg, DETECTORS, path="model").eval()


def medians(fns, repeats: int, warmup: int) -> list[float]:  # noqa: ANN001
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fuse-conv-bn", action="store_true", help="eager models: BatchNorm folded into the convs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    torch.set_num_threads(2)
    torch.manual_seed(0)
    fns, names = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (preset, (h, w)) in MODELS.items():
            model = build_model(preset)
            x = torch.randn(1, 3, h, w)
            path = Path(tmp) / f"{name}.onnx"
            trace_to_onnx(deploy_model(model), x, path, min_opset(model))
            options = ort.SessionOptions()
            options.intra_op_num_threads = 2
            options.log_severity_level = 3
            sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            if args.fuse_conv_bn:
                fuse_conv_bn(model)
            batch = ImageBatch(x, [(h, w)])
            feed = graph_feed([i.name for i in sess.get_inputs()], batch)  # the tensor and image_sizes
            fns += [lambda m=model, b=batch: m.predict(b), lambda s=sess, f=feed: s.run(None, f)]
            names += [(name, "det_eager_s"), (name, "onnxruntime_s")]
        times = medians(fns, args.repeats, args.warmup)
    rows: dict[str, dict[str, float]] = {}
    for (name, kind), t in zip(names, times):
        rows.setdefault(name, {"size": "x".join(map(str, MODELS[name][1]))})[kind] = t
    speedup = {k: rows["retinanet_r50"][k] / rows["yolox_s"][k] for k in ("det_eager_s", "onnxruntime_s")}
    if args.json:
        print(json.dumps({"rows": rows, "yolox_s_speedup": speedup}))
        return 0
    print(f"{'model':<14} {'input':>9} {'det eager':>10} {'onnxruntime':>12}  (s/image, median of {args.repeats})")
    for name, r in rows.items():
        print(f"{name:<14} {r['size']:>9} {r['det_eager_s']:>10.3f} {r['onnxruntime_s']:>12.3f}")
    print(f"yolox_s speed-up over retinanet_r50: eager {speedup['det_eager_s']:.1f}x, "
          f"ONNX Runtime {speedup['onnxruntime_s']:.1f}x (target >= 4x in ONNX Runtime)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
