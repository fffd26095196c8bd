"""Training throughput of 1 process vs N DDP processes (gloo on CPU, or nccl on GPUs).

Usage: python benchmarks/ddp_throughput.py [--preset presets/quickstart.yaml] [--nproc 2] [--iters 30]
                                           [--samples-per-gpu 4] [--device cpu]

Runs `det train --no-validate` as a user would (1 process, then `--nproc N`, both with the same
per-process batch), reads the per-iteration times from the `.log.json` (the first 5 iterations are
warm-up and ignored) and prints img/s for both and the speed-up as one JSON line on stdout, plus
1 process with one torch thread and the load average (on a shared machine other jobs skew the
figures). On CPU the processes share the cores (`det --nproc` gives each `cores / N` torch threads).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP = 5


def run(preset: str, work_dir: Path, nproc: int, iters: int, samples: int, device: str, threads: int | None = None) -> float:
    """Train ``iters`` iterations; return images per second over the iterations after the warm-up."""
    cmd = [sys.executable, "-m", "detcli", "train", preset, "--work-dir", str(work_dir), "--no-validate",
           "--device", device, "--cfg-options", f"runner.max_iters={iters}", "log_config.interval=1",
           f"data.samples_per_gpu={samples}", f"checkpoint_config.interval={iters}"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    records = [json.loads(line) for line in next(work_dir.glob("*.log.json")).read_text().splitlines()]
    times = [r["time"] for r in records if r.get("mode") == "train"][WARMUP:]
    if not times:
        raise SystemExit(f"need more than {WARMUP} iterations (--iters)")
    return samples * nproc / (sum(times) / len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="presets/quickstart.yaml")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--samples-per-gpu", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        load_before = os.getloadavg()[0]
        one = run(args.preset, Path(tmp) / "one", 1, args.iters, args.samples_per_gpu, args.device)
        one_t1 = run(args.preset, Path(tmp) / "one_t1", 1, args.iters, args.samples_per_gpu, args.device, threads=1)
        many = run(args.preset, Path(tmp) / "many", args.nproc, args.iters, args.samples_per_gpu, args.device)
    print(json.dumps({
        "preset": args.preset, "device": args.device, "cores": len(os.sched_getaffinity(0)),
        "samples_per_gpu": args.samples_per_gpu, "iters": args.iters,
        "img_per_s_1proc": round(one, 2), "img_per_s_1proc_1thread": round(one_t1, 2),
        f"img_per_s_{args.nproc}proc": round(many, 2), "speedup": round(many / one, 3),
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
