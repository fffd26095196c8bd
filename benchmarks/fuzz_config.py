"""A longer fuzz run of the config loader and the ``--cfg-options`` parser than the test suite's.

Usage: python benchmarks/fuzz_config.py [--examples 2000] [--seed 0]

Feeds the strategies of ``tests/test_config_fuzz.py`` (random bytes, YAML-ish text, random YAML
structures with det's keys, random KEY=VALUE overrides on the quickstart preset) to
:func:`detcli.config.load_config` and counts the outcomes per input kind: loaded, refused with a
``ConfigError``, or crashed (any other exception: its type and message are listed). Prints one
JSON line; exit code 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_config_fuzz as fuzz  # noqa: E402  (the test suite's strategies)

from detcli.config import load_config  # noqa: E402
from detcli.errors import ConfigError  # noqa: E402
from detcli.resources import find_preset  # noqa: E402


def _bind(case: Callable[..., None]) -> Callable[[Any], None]:
    """``case`` with its defaults bound (@given refuses functions with default arguments)."""

    def inner(value: Any) -> None:
        case(value)

    return inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per input kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts: dict[str, Counter[str]] = {}
    crashes: Counter[str] = Counter()
    scratch = Path(tempfile.mkdtemp(prefix="det-fuzz-"))
    quickstart = find_preset("quickstart")

    def run(kind: str, load: Callable[[], Any]) -> None:
        tally = counts.setdefault(kind, Counter())
        try:
            load()
            tally["loaded"] += 1
        except ConfigError:
            tally["config_error"] += 1
        except Exception as e:  # noqa: BLE001  (what this benchmark counts)
            tally["crash"] += 1
            crashes[f"{kind}: {type(e).__name__}: {str(e)[:120]}"] += 1

    def from_file(data: bytes) -> Callable[[], Any]:
        path = scratch / "p.yaml"
        path.write_bytes(data)
        return lambda: load_config(path)

    cases: list[tuple[str, Any, Callable[[Any], Callable[[], Any]]]] = [
        ("bytes", st.binary(max_size=2000), from_file),
        ("yaml_text", fuzz.yaml_texts, lambda t: from_file(t.encode("utf-8", "surrogatepass"))),
        ("structures", fuzz.configs, lambda c: from_file(yaml.safe_dump(c).encode())),
        ("cfg_options", st.lists(fuzz.options, min_size=1, max_size=4), lambda o: lambda: load_config(quickstart, o)),
    ]
    start = time.perf_counter()
    for kind, strategy, make in cases:
        def case(value: Any, kind: str = kind, make: Callable[[Any], Callable[[], Any]] = make) -> None:
            run(kind, make(value))

        wrapped = seed(args.seed)(settings(max_examples=args.examples, deadline=None, database=None,
                                           suppress_health_check=list(HealthCheck))(given(strategy)(_bind(case))))
        wrapped()
    total = sum(sum(c.values()) for c in counts.values())
    result = {
        "cases": total,
        "seconds": round(time.perf_counter() - start, 1),
        "by_kind": {k: dict(v) for k, v in counts.items()},
        "crashes": sum(crashes.values()),
        "crash_kinds": dict(crashes.most_common(20)),
    }
    print(json.dumps(result))
    raise SystemExit(1 if crashes else 0)


if __name__ == "__main__":
    main()
