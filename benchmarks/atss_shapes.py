"""Train presets/atss_r18_fpn_shapes.yaml, evaluate it, and print bbox mAP and the wall time (issue 13: ≥ 0.55 in ≤ 10 min).

Usage:
    python benchmarks/atss_shapes.py [--work-dir DIR] [--preset presets/atss_r18_fpn_shapes.yaml] [--cfg-options k=v ...]
        Runs `det train` then `det test --json` as a user would, and prints one JSON summary line on stdout.
    python benchmarks/atss_shapes.py --cost-ratio [--iters N] [--baseline B] [--baseline-options k=v ...]
        The per-iteration training cost relative to a baseline, measured as in
        ``benchmarks/quickstart.py --cost-ratio`` (the default baseline is the previous, full-width
        quickstart: about 1.0 s per iteration on the reference 2-core machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path


def _quickstart_bench():
    """benchmarks/quickstart.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("quickstart_bench", Path(__file__).with_name("quickstart.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    bench = _quickstart_bench()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/atss_shapes_bench")
    parser.add_argument("--preset", default="presets/atss_r18_fpn_shapes.yaml")
    parser.add_argument("--cfg-options", nargs="*", default=[])
    parser.add_argument("--cost-ratio", action="store_true", help="measure the per-iteration cost ratio only")
    parser.add_argument("--iters", type=int, default=10, help="iterations per model for --cost-ratio")
    parser.add_argument("--baseline", default=bench.PRESET, help="baseline preset for --cost-ratio")
    parser.add_argument("--baseline-options", nargs="*", default=None,
                        help="overrides of the baseline (default: the previous full-width quickstart)")
    args = parser.parse_args()
    if args.cost_ratio:
        base_opts = bench.BASELINE_OPTIONS if args.baseline_options is None else args.baseline_options
        summary = bench.cost_ratio(args.preset, args.cfg_options, args.baseline, base_opts, args.iters)
    else:
        summary = bench.train_and_test(args.preset, args.work_dir, args.cfg_options, 0.55)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
