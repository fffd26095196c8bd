"""Read det's JSON-lines training logs; plot curves and summarize iteration times (mmdet's analyze_logs).

A log is what :class:`detcli.engine.hooks.LoggerHook` writes to ``<work_dir>/<timestamp>.log.json``:
a header line (env info, config; no ``mode``), then one line per logging interval
(``{"mode": "train", "epoch", "iter", "lr", "time", "data_time", "loss_*", ...}``) and one per
evaluation (``{"mode": "val", "epoch", "iter", "bbox_mAP", ...}``). Non-finite numbers are
written as strings (``"nan"``) and read back as floats.

The train ``time`` of a line written at an iteration that ran an evaluation (iteration-based runs:
the ``val`` line with the same ``(epoch, iter)``) includes the evaluation, so
:func:`cal_train_time` leaves such lines out. Whether a run counts in epochs or iterations comes from
the header's config (``runner.type``), else from the train ``iter`` restarting at each epoch.

Resumed runs log the iterations between the last checkpoint and the interruption twice; a later
line for the same ``(mode, epoch, iter)`` replaces the earlier one (the resumed run is the one
whose weights continued), and records are ordered by ``(epoch, iter)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detcli.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

#: seaborn styles accepted by ``--style``.
STYLES: tuple[str, ...] = ("white", "dark", "whitegrid", "darkgrid", "ticks")

#: Output formats of :func:`plot_curves`.
PLOT_FORMATS: tuple[str, ...] = (".png", ".pdf", ".svg", ".jpg")


@dataclass
class TrainLog:
    """One parsed log.

    Attributes:
        name: the file name (``stdin`` for ``-``).
        train: train records, deduplicated, ordered by ``(epoch, iter)``.
        val: evaluation records, deduplicated, ordered by ``(epoch, iter)``.
        duplicates: lines replaced by a later line for the same ``(mode, epoch, iter)``.
        runner: ``runner.type`` of the config in the header (``EpochBasedRunner``, ``IterBasedRunner``);
            None when the log has no readable header.
    """

    name: str
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    runner: str | None = None

    @property
    def by_epoch(self) -> bool:
        """True for an epoch-based run: the header's runner, else train ``iter`` restarts every epoch.

        Without a header, a log of one epoch counts as iteration-based.
        """
        if self.runner is not None:
            return self.runner != "IterBasedRunner"
        iters = [int(r["iter"]) for r in self.train]
        if any(b < a for a, b in zip(iters, iters[1:])):
            return True
        if self.train:
            return False  # one epoch, or several with a global iteration count
        return len({r["epoch"] for r in self.val}) > 1

    @property
    def iters_per_epoch(self) -> int:
        """Largest train ``iter`` of the first epoch (the last line of an epoch is always written)."""
        if not self.train:
            return 0
        first = self.train[0]["epoch"]
        return max(int(r["iter"]) for r in self.train if r["epoch"] == first)

    def keys(self) -> list[str]:
        """Numeric keys present in the train or val records."""
        skip = {"mode", "epoch", "iter"}
        found: dict[str, None] = {}
        for r in self.train + self.val:
            for k, v in r.items():
                if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
                    found[k] = None
        return list(found)


def _number(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
        return float(value)
    return value


def _runner_type(header: dict[str, Any]) -> str | None:
    """``runner.type`` of the YAML config a header line carries (None when absent or unreadable)."""
    config = header.get("config")
    if not isinstance(config, str):
        return None
    import yaml

    try:
        cfg = yaml.safe_load(config)
    except yaml.YAMLError:
        return None
    runner = cfg.get("runner") if isinstance(cfg, dict) else None
    kind = runner.get("type") if isinstance(runner, dict) else None
    return kind if isinstance(kind, str) else None


def parse_log(text: str, name: str) -> TrainLog:
    """Parse JSON-lines ``text`` of the file ``name``; raise :class:`DatasetError` naming the line.

    Raises:
        DatasetError: a line is not JSON, or the file holds no train/val record (not a det log).
    """
    records: dict[tuple[str, int, int], dict[str, Any]] = {}
    duplicates = 0
    runner: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{name}:{lineno}: not a JSON line ({e.msg}); pass the <timestamp>.log.json file of the work dir, not the .log text"
            ) from None
        if isinstance(record, dict) and "mode" not in record and "config" in record:
            runner = _runner_type(record) or runner
        if not isinstance(record, dict) or record.get("mode") not in ("train", "val"):
            continue  # header lines (env info, config) and anything else without a mode
        if "epoch" not in record or "iter" not in record:
            raise DatasetError(f"{name}:{lineno}: a {record['mode']} line without 'epoch'/'iter'")
        key = (str(record["mode"]), int(record["epoch"]), int(record["iter"]))
        if key in records:
            duplicates += 1
            del records[key]
        records[key] = {k: _number(v) for k, v in record.items()}
    if not records:
        raise DatasetError(
            f"{name}: no train or val record (lines with \"mode\": \"train\"/\"val\"); is this a det <timestamp>.log.json?"
        )
    ordered = [records[k] for k in sorted(records, key=lambda k: (k[1], k[2], k[0] == "val"))]
    log = TrainLog(name=name, duplicates=duplicates, runner=runner)
    for r in ordered:
        (log.train if r["mode"] == "train" else log.val).append(r)
    if duplicates:
        logger.info("%s: %d duplicated iteration line(s) of a resumed run: the later ones kept", name, duplicates)
    return log


def load_log(path: str | os.PathLike[str]) -> TrainLog:
    """Read and parse a log file, or stdin when ``path`` is ``-``."""
    if str(path) == "-":
        return parse_log(sys.stdin.read(), "stdin")
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such log file") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}: not a JSON-lines text file ({e.__class__.__name__}); pass a <timestamp>.log.json") from None
    return parse_log(text, str(p))


def load_logs(paths: Sequence[str | os.PathLike[str]]) -> list[TrainLog]:
    if not paths:
        raise ConfigError("no log file given")
    if sum(str(p) == "-" for p in paths) > 1:
        raise ConfigError("stdin ('-') can be given only once")
    return [load_log(p) for p in paths]


@dataclass(frozen=True)
class TrainTime:
    """mmdet's ``cal_train_time`` figures for one log (seconds per iteration)."""

    name: str
    slowest_epoch: int
    slowest_time: float
    fastest_epoch: int
    fastest_time: float
    std_over_epochs: float
    average_iter_time: float
    epochs: int
    eval_lines_excluded: int = 0

    def format(self) -> str:
        """mmdet's printout (plus the count of lines left out because they include an evaluation)."""
        lines = [
            f"-----Analyze train time of {self.name}-----",
            f"slowest epoch {self.slowest_epoch}, average time is {self.slowest_time:.4f}",
            f"fastest epoch {self.fastest_epoch}, average time is {self.fastest_time:.4f}",
            f"time std over epochs is {self.std_over_epochs:.4f}",
            f"average iter time: {self.average_iter_time:.4f} s/iter",
        ]
        if self.eval_lines_excluded:
            lines.append(f"({self.eval_lines_excluded} train line(s) left out: their time includes an evaluation)")
        return "\n".join(lines)


def cal_train_time(log: TrainLog, include_outliers: bool = False) -> TrainTime:
    """Per-epoch mean of the train ``time`` values; the first line of each epoch (data loader start-up,
    cudnn autotune) is left out unless ``include_outliers``. In iteration-based runs the lines written
    at an evaluation iteration (a ``val`` line with the same ``(epoch, iter)``) are always left out:
    their time includes the evaluation.

    Raises:
        DatasetError: no train line has a ``time``, or every epoch has only its first line.
    """
    evaluated = set() if log.by_epoch else {(int(r["epoch"]), int(r["iter"])) for r in log.val}
    per_epoch: dict[int, list[float]] = {}
    excluded = 0
    for r in log.train:
        if (int(r["epoch"]), int(r["iter"])) in evaluated:
            excluded += 1
            continue
        if isinstance(r.get("time"), (int, float)) and math.isfinite(r["time"]):
            per_epoch.setdefault(int(r["epoch"]), []).append(float(r["time"]))
    if not per_epoch:
        left_out = f" ({excluded} line(s) holding an evaluation left out)" if excluded else ""
        raise DatasetError(f"{log.name}: no train line with a 'time' value{left_out}")
    times = {e: (t if include_outliers else t[1:]) for e, t in per_epoch.items()}
    times = {e: t for e, t in times.items() if t}
    if not times:
        raise DatasetError(f"{log.name}: each epoch has a single train line, which is dropped as an outlier; use --include-outliers")
    epochs = sorted(times)
    means = np.array([np.mean(times[e]) for e in epochs])
    slow, fast = int(means.argmax()), int(means.argmin())
    return TrainTime(
        name=log.name, slowest_epoch=epochs[slow], slowest_time=float(means[slow]), fastest_epoch=epochs[fast],
        fastest_time=float(means[fast]), std_over_epochs=float(means.std()),
        average_iter_time=float(np.mean(np.concatenate([times[e] for e in epochs]))), epochs=len(epochs),
        eval_lines_excluded=excluded,
    )


def curve(log: TrainLog, key: str, eval_interval: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x, y, x_label)`` of ``key`` in ``log``.

    Train keys (losses, lr, time) are plotted over the global iteration; keys found only in val
    records (``bbox_mAP``...) are plotted per evaluation, over the epoch in epoch-based runs and the
    iteration in iteration-based runs. ``eval_interval`` keeps the evaluations whose epoch (or
    iteration) is a multiple of it.

    Raises:
        DatasetError: ``key`` is in no record (the message lists the keys the log has).
    """
    in_train = [r for r in log.train if key in r]
    in_val = [r for r in log.val if key in r]
    if not in_train and not in_val:
        raise DatasetError(f"{log.name}: no key '{key}' (the log has: {', '.join(log.keys())})")
    if in_train:
        ipe = log.iters_per_epoch if log.by_epoch else 0
        x = np.array([(int(r["epoch"]) - 1) * ipe + int(r["iter"]) for r in in_train], dtype=np.float64)
        y = np.array([float(r[key]) for r in in_train])
        return x, y, "iter"
    unit = "epoch" if log.by_epoch else "iter"
    x = np.array([int(r[unit]) for r in in_val], dtype=np.float64)
    y = np.array([float(r[key]) for r in in_val])
    if eval_interval:
        keep = (x % eval_interval) == 0
        x, y = x[keep], y[keep]
    return x, y, unit


def plot_curves(
    logs: Sequence[TrainLog],
    keys: Sequence[str],
    out: str | os.PathLike[str],
    *,
    legend: Sequence[str] | None = None,
    title: str | None = None,
    eval_interval: int | None = None,
    style: str = "darkgrid",
) -> Path:
    """Draw every ``key`` of every log on one figure and write it to ``out`` (.png, .pdf, .svg, .jpg).

    Legends default to ``<log name>_<key>``; ``legend`` must then have ``len(logs) * len(keys)`` entries.

    Raises:
        ConfigError: no key, a wrong legend count, an unknown style or output format.
        DatasetError: a key is not in a log.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from detcli.fileio import atomic_output

    if not keys:
        raise ConfigError("--keys: give at least one key, e.g. --keys loss_cls loss_bbox")
    if style not in STYLES:
        raise ConfigError(f"--style '{style}' is not a seaborn style (choose: {', '.join(STYLES)})")
    out = Path(out)
    if out.suffix.lower() not in PLOT_FORMATS:
        raise ConfigError(f"--out {out}: unsupported format '{out.suffix}' (use {', '.join(PLOT_FORMATS)})")
    n = len(logs) * len(keys)
    if legend is not None and len(legend) != n:
        raise ConfigError(f"--legend: {len(legend)} names for {len(logs)} log(s) x {len(keys)} key(s) = {n} curves")
    curves = [(log, key, *curve(log, key, eval_interval)) for log in logs for key in keys]
    names = list(legend) if legend is not None else [
        f"{Path(log.name).name.removesuffix('.log.json')}_{key}" for log in logs for key in keys
    ]
    sns.set_theme(style=style)
    fig, ax = plt.subplots(figsize=(8, 5))
    units = set()
    for (_log, _key, x, y, unit), label in zip(curves, names):
        units.add(unit)
        ax.plot(x, y, label=label, marker="o" if unit == "epoch" or len(x) < 20 else None, linewidth=1.2)
    ax.set_xlabel(" / ".join(sorted(units)))
    ax.legend()
    if title:
        ax.set_title(title)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lower().lstrip(".").replace("jpg", "jpeg"), dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
