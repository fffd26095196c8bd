"""A longer fuzz run over every fuzz target: det's file readers, the converters and the config loader.

Usage: OMP_NUM_THREADS=1 python benchmarks/fuzz.py [--examples 500] [--seed 0] [--targets NAME ...]

Targets are those of ``tests/fuzz_inputs.py`` (COCO reader, ``convert-dataset check``, ``eval --gt --dt``
with both engines, confusion matrix, analyze-results, YOLO/VOC/labelme converters) and the input kinds
of ``benchmarks/fuzz_config.py`` (config bytes, YAML text, YAML structures, ``--cfg-options``). A case
passes when it returns or raises one of det's typed errors (:class:`detcli.errors.DetError`); any other
exception is a crash, grouped into causes by exception type and the det source line that raised it.
Prints a table (target, cases, crashes, distinct causes), then one example per cause; exit code 1
when anything crashed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_config_fuzz as config_fuzz  # noqa: E402

from detcli.config import load_config  # noqa: E402
from detcli.errors import DetError  # noqa: E402
from detcli.resources import find_preset  # noqa: E402

import fuzz_inputs  # noqa: E402  (the test suite's targets)


def cause_of(e: BaseException) -> str:
    """``Type at file:line`` of the innermost frame inside detcli (else the innermost frame)."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "/detcli/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(e).__name__} at {where}"


def config_targets(scratch: Path) -> dict[str, tuple[Any, Callable[[Any, Path], None]]]:
    """fuzz_config.py's input kinds, as targets of the same shape."""
    quickstart = find_preset("quickstart")

    def from_bytes(data: bytes, where: Path) -> None:
        path = where / "p.yaml"
        path.write_bytes(data)
        load_config(path)

    return {
        "config_bytes": (st.binary(max_size=2000), from_bytes),
        "config_yaml_text": (config_fuzz.yaml_texts, lambda t, w: from_bytes(t.encode("utf-8", "surrogatepass"), w)),
        "config_structures": (config_fuzz.configs, lambda c, w: from_bytes(yaml.safe_dump(c).encode(), w)),
        "config_cfg_options": (st.lists(config_fuzz.options, min_size=1, max_size=4),
                               lambda o, w: load_config(quickstart, o)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="cases per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="*", help="only these targets")
    args = parser.parse_args()
    scratch_root = Path(tempfile.mkdtemp(prefix="det-fuzz-"))
    targets = {**fuzz_inputs.TARGETS, **config_targets(scratch_root)}
    names = args.targets or list(targets)
    rows = []
    examples: dict[str, tuple[str, str]] = {}
    start_all = time.perf_counter()
    try:
        for name in names:
            strategy, run = targets[name]
            tally: Counter[str] = Counter()
            causes: Counter[str] = Counter()
            start = time.perf_counter()

            def case(value: Any, name: str = name, run: Callable[[Any, Path], None] = run,
                     tally: Counter[str] = tally, causes: Counter[str] = causes) -> None:
                where = scratch_root / f"case{tally.total()}"
                try:
                    if name in fuzz_inputs.TARGETS:
                        fuzz_inputs.run_target(name, value, where)
                    else:
                        where.mkdir(parents=True, exist_ok=True)
                        run(value, where)
                    tally["ok"] += 1
                except DetError:
                    tally["det_error"] += 1
                except Exception as e:  # noqa: BLE001  (what this benchmark counts)
                    tally["crash"] += 1
                    cause = f"{name}: {cause_of(e)}"
                    causes[cause] += 1
                    examples.setdefault(cause, (f"{type(e).__name__}: {str(e)[:160]}", repr(value)[:300]))
                finally:
                    shutil.rmtree(where, ignore_errors=True)

            def bound(value: Any) -> None:
                case(value)

            wrapped = seed(args.seed)(settings(max_examples=args.examples, deadline=None, database=None,
                                               suppress_health_check=list(HealthCheck))(given(strategy)(bound)))
            wrapped()
            rows.append((name, tally.total(), tally["det_error"], tally["crash"], len(causes),
                         round(time.perf_counter() - start, 1)))
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)
    header = ("target", "cases", "typed errors", "crashes", "distinct causes", "seconds")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    total = sum(r[3] for r in rows)
    print(f"\n{sum(r[1] for r in rows)} cases, {total} crashes, {len(examples)} distinct causes, "
          f"{time.perf_counter() - start_all:.0f} s")
    for cause, (message, value) in examples.items():
        print(f"\n{cause}\n  {message}\n  input: {value}")
    raise SystemExit(1 if total else 0)


if __name__ == "__main__":
    main()
