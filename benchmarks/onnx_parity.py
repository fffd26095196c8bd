"""bbox (and segm) mAP of PyTorch vs ONNX Runtime per supported model on the shapes val split (README table).

Each checkpoint is exported with ``det export-onnx`` semantics (dynamic shapes, parity gate on),
then ``det test`` runs the val split through PyTorch and through ONNX Runtime; models with masks
(Mask R-CNN) are evaluated with ``segm`` too.

Usage (checkpoints trained from presets/quickstart.yaml, presets/retinanet_r18_fpn_shapes.yaml and
presets/mask_rcnn_r18_fpn_shapes.yaml, e.g. ``--cfg-options runner.max_iters=200`` for the last):
    python benchmarks/onnx_parity.py MODEL=CKPT [MODEL=CKPT ...] [--out-dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from detcli.engine import test
from detcli.engine.onnx_export import export_onnx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="NAME=CHECKPOINT")
    parser.add_argument("--out-dir", default=None, help="keep the .onnx files here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.out_dir or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in args.checkpoints:
            name, ckpt = item.split("=", 1)
            exported = export_onnx(None, ckpt, output_file=out_dir / f"{name}.onnx", dynamic_export=True)
            metrics = ["bbox", "segm"] if "masks" in exported.outputs else ["bbox"]
            ref = test(None, ckpt, metrics=metrics).metrics
            got = test(None, str(exported.output_file), metrics=metrics, backend="onnxruntime").metrics
            for metric in metrics:
                key = f"{metric}_mAP"
                rows.append({"model": name, "type": exported.model_type, "metric": metric, "pytorch_mAP": ref[key],
                             "onnxruntime_mAP": got[key], "diff": abs(ref[key] - got[key])})
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| model | metric | PyTorch mAP | ONNX Runtime mAP | abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} ({r['type']}) | {r['metric']} | {r['pytorch_mAP']:.4f} | {r['onnxruntime_mAP']:.4f} "
              f"| {r['diff']:.4f} |")
    return 0 if all(r["diff"] <= 0.002 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
