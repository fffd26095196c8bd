"""`det benchmark` rows for the model zoo: per preset, inference latency per image in PyTorch eager and
(with ``--onnx``) of the exported graph in ONNX Runtime, plus FLOPs and parameters, as a markdown table.

Every number comes from the CLI a user runs (``det benchmark PRESET [MODEL.onnx] --json`` and
``det benchmark PRESET --flops --json``) in a subprocess, with random weights (same speed as trained ones;
few scores pass the thresholds, so post-processing is the cheap case). The shapes presets time their own
val split (256x256). COCO presets time the 128 images of ``../shared/data/coco128`` (no COCO download):
``det convert-dataset images2coco`` writes a test-set json for them, and the preset's test pipeline resizes
each image as for COCO val2017 (e.g. 800x1333). Threads: torch and ONNX Runtime use what the machine has
(2 here); time on a quiet machine.

Usage:
    python benchmarks/zoo_latency.py [--presets quickstart,yolox_tiny_shapes,...] [--onnx] [--max-iter 12]
        [--num-warmup 2] [--coco128 DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detcli.config import load_config, resolve_preset_path  # noqa: E402

#: the presets added with the model-zoo wave 2 and YOLOX, next to the quickstart and RetinaNet-R50
DEFAULT = ("quickstart,atss_r18_fpn_shapes,yolox_tiny_shapes,mask_rcnn_r18_fpn_shapes,cascade_mask_rcnn_r18_fpn_shapes,"
           "retinanet_r50_fpn_1x_coco,atss_r50_fpn_1x_coco,gfl_r50_fpn_1x_coco,cascade_rcnn_r50_fpn_1x_coco,"
           "cascade_mask_rcnn_r50_fpn_1x_coco,retinanet_x101_32x4d_fpn_1x_coco,faster_rcnn_x101_32x4d_fpn_1x_coco,"
           "yolox_tiny_8x8_300e_coco,yolox_s_8x8_300e_coco")


def det(*args: str, capture: bool = True) -> str:
    cmd = [sys.executable, "-m", "detcli", *args]
    out = subprocess.run(cmd, check=False, capture_output=capture, text=True, env=dict(os.environ))
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:] if capture else ''}")
    return out.stdout


def coco128_options(coco128: Path, work: Path) -> list[str]:
    """--cfg-options pointing data.test of a COCO preset at coco128's images (a test-set json, no labels)."""
    ann = work / "coco128_test.json"
    if not ann.exists():
        det("convert-dataset", "images2coco", str(coco128 / "images"), str(coco128 / "names.txt"), str(ann))
    return [f"data.test.ann_file={ann}", f"data.test.img_prefix={coco128 / 'images'}", "data.test.data_root=null"]


def random_checkpoint(preset: str, options: list[str], path: Path) -> Path:
    """A det checkpoint of the preset's model with seeded random weights (what `det export onnx` needs)."""
    import torch

    from detcli.config import apply_overrides
    from detcli.engine.builders import build_model, build_split
    from detcli.engine.checkpoint import atomic_save, make_checkpoint

    cfg = load_config(str(resolve_preset_path(preset)))
    if options:
        cfg = apply_overrides(cfg, options)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    classes = tuple(build_split(cfg, "test", test_mode=True)[0].classes)
    return atomic_save(make_checkpoint(model, epoch=0, iter=0, config=cfg, classes=classes), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=DEFAULT)
    parser.add_argument("--onnx", action="store_true", help="also export each model and time it in ONNX Runtime")
    parser.add_argument("--max-iter", type=int, default=12)
    parser.add_argument("--num-warmup", type=int, default=2)
    parser.add_argument("--coco128", type=Path, default=ROOT.parent / "shared" / "data" / "coco128")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for preset in args.presets.split(","):
            cfg = load_config(str(resolve_preset_path(preset)))
            options = coco128_options(args.coco128, work) if cfg["data"]["test"].get("type") == "CocoDataset" else []
            cfg_opts = ["--cfg-options", *options] if options else []
            timing = ["--max-iter", str(args.max_iter), "--num-warmup", str(args.num_warmup), "--json"]
            print(f"{preset}: eager", file=sys.stderr, flush=True)
            eager = json.loads(det("benchmark", preset, *timing, *cfg_opts))
            flops = json.loads(det("benchmark", preset, "--flops", "--json"))
            row = {"preset": preset, "flops_shape": flops["shape"], "gflops": flops["gflops"], "mparams": flops["mparams"],
                   "eager_ms": eager["latency_ms"]["median"], "eager_split_ms": eager["split_ms"]}
            if args.onnx:
                print(f"{preset}: export + ONNX Runtime", file=sys.stderr, flush=True)
                ckpt = random_checkpoint(preset, options, work / f"{preset}.pth")
                graph = work / f"{preset}.onnx"
                det("export", "onnx", preset, str(ckpt), "--output-file", str(graph), "--dynamic-export", "--no-verify",
                    *cfg_opts)
                ort = json.loads(det("benchmark", preset, str(graph), *timing, *cfg_opts))
                row["onnx_ms"] = ort["latency_ms"]["median"]
                graph.unlink()
                ckpt.unlink()
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    head = "| preset | GFLOPs (input) | params | eager ms/img |" + (" ONNX Runtime ms/img |" if args.onnx else "")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        shape = "x".join(str(v) for v in r["flops_shape"])
        line = f"| `{r['preset']}` | {r['gflops']:.1f} ({shape}) | {r['mparams']:.1f} M | {r['eager_ms']:.0f} |"
        if args.onnx:
            line += f" {r['onnx_ms']:.0f} |"
        print(line)


if __name__ == "__main__":
    main()
