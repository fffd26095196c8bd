"""`det analyze-logs`: parse det's JSON logs (resumed runs, stdin), plot curves, cal-train-time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.errors import ConfigError, DatasetError
from detcli.evaluation.log_analysis import cal_train_time, curve, load_log, parse_log, plot_curves

HEADER = {"env_info": "sys.platform: linux", "config": "model = ...", "seed": 0}


def make_log(epochs: int = 3, ipe: int = 100, interval: int = 25, seed: int = 0, resume_at: int | None = None) -> str:
    """Lines as LoggerHook writes them; with ``resume_at`` the run is interrupted during that epoch
    and resumed from the start of it, so that epoch's lines appear twice (the second time with other values)."""
    rng = np.random.default_rng(seed)
    lines = [json.dumps(HEADER)]

    def epoch_lines(e: int, shift: float = 0.0) -> list[str]:
        out = []
        for it in range(interval, ipe + 1, interval):
            loss_cls = 1.0 / (e * ipe + it) ** 0.3 + shift
            out.append(json.dumps({"mode": "train", "epoch": e, "iter": it, "lr": 0.01, "memory": 0,
                                   "data_time": 0.01, "loss_cls": loss_cls, "loss_bbox": loss_cls / 2,
                                   "loss": loss_cls * 1.5, "time": (2.0 if it == interval else 0.1 * e) + float(rng.uniform(0, 1e-3))}))
        out.append(json.dumps({"mode": "val", "epoch": e, "iter": ipe, "lr": 0.01, "bbox_mAP": 0.1 * e,
                               "bbox_mAP_50": 0.2 * e, "bbox_mAP_copypaste": "0.1 0.2"}))
        return out

    for e in range(1, epochs + 1):
        if resume_at == e:
            lines += epoch_lines(e, shift=5.0)[:2]  # interrupted: these are replaced after resuming
            lines.append(json.dumps(HEADER))
        lines += epoch_lines(e)
    return "\n".join(lines) + "\n"


def test_parse_skips_header_and_keeps_later_duplicates() -> None:
    log = parse_log(make_log(resume_at=2), "a.log.json")
    assert log.duplicates == 2
    assert len(log.train) == 12 and len(log.val) == 3
    assert all(r["loss_cls"] < 5 for r in log.train)  # the interrupted lines were replaced
    assert [(r["epoch"], r["iter"]) for r in log.train][:5] == [(1, 25), (1, 50), (1, 75), (1, 100), (2, 25)]
    assert log.by_epoch and log.iters_per_epoch == 100
    assert {"loss_cls", "bbox_mAP", "lr", "time"} <= set(log.keys())


def test_nan_strings_become_floats() -> None:
    text = json.dumps({"mode": "train", "epoch": 1, "iter": 5, "loss": "nan", "time": 0.1})
    assert np.isnan(parse_log(text, "x").train[0]["loss"])


def test_curve_train_over_iterations_metrics_over_epochs() -> None:
    log = parse_log(make_log(), "a")
    x, y, unit = curve(log, "loss_cls")
    assert unit == "iter" and x.tolist() == [25, 50, 75, 100, 125, 150, 175, 200, 225, 250, 275, 300]
    x, y, unit = curve(log, "bbox_mAP")
    assert unit == "epoch" and x.tolist() == [1, 2, 3] and y == pytest.approx([0.1, 0.2, 0.3])
    x, _, _ = curve(log, "bbox_mAP", eval_interval=2)
    assert x.tolist() == [2]
    with pytest.raises(DatasetError, match="no key 'loss_mask' .*the log has: .*loss_cls"):
        curve(log, "loss_mask")


def test_cal_train_time_matches_mmdet_formula() -> None:
    log = parse_log(make_log(resume_at=3), "a")
    t = cal_train_time(log)
    per_epoch = {e: [r["time"] for r in log.train if r["epoch"] == e][1:] for e in (1, 2, 3)}
    means = [np.mean(v) for v in per_epoch.values()]
    assert t.slowest_epoch == 3 and t.fastest_epoch == 1
    assert t.slowest_time == pytest.approx(means[2]) and t.std_over_epochs == pytest.approx(np.std(means))
    assert t.average_iter_time == pytest.approx(np.mean(sum(per_epoch.values(), [])))
    with_outliers = cal_train_time(log, include_outliers=True)
    assert with_outliers.average_iter_time > t.average_iter_time
    text = t.format()
    assert "slowest epoch 3, average time is" in text and "s/iter" in text


def test_cal_train_time_single_line_epochs_need_outliers() -> None:
    text = json.dumps({"mode": "train", "epoch": 1, "iter": 10, "time": 0.5})
    with pytest.raises(DatasetError, match="use --include-outliers"):
        cal_train_time(parse_log(text, "x"))
    assert cal_train_time(parse_log(text, "x"), include_outliers=True).average_iter_time == 0.5


def test_bad_logs_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"a.log:2: not a JSON line"):
        parse_log('{"mode": "train", "epoch": 1, "iter": 1}\n2026-01-01 INFO Epoch [1]\n', "a.log")
    with pytest.raises(DatasetError, match="no train or val record"):
        parse_log(json.dumps({"images": []}), "gt.json")
    with pytest.raises(DatasetError, match="no such log file"):
        load_log(tmp_path / "missing.log.json")


def test_plot_several_logs_png_and_pdf(tmp_path: Path) -> None:
    logs = [parse_log(make_log(seed=0), "a.log.json"), parse_log(make_log(seed=1, resume_at=2), "b.log.json")]
    png = plot_curves(logs, ["loss_cls", "loss_bbox"], tmp_path / "c.png", title="t", style="whitegrid")
    assert png.read_bytes()[:4] == b"\x89PNG"
    pdf = plot_curves(logs, ["bbox_mAP"], tmp_path / "m.pdf", legend=["A", "B"])
    assert pdf.read_bytes()[:4] == b"%PDF"
    with pytest.raises(ConfigError, match="--legend: 1 names for 2 log"):
        plot_curves(logs, ["bbox_mAP"], tmp_path / "m.png", legend=["A"])
    with pytest.raises(ConfigError, match="--style 'fancy'"):
        plot_curves(logs, ["loss"], tmp_path / "m.png", style="fancy")
    with pytest.raises(ConfigError, match="unsupported format '.txt'"):
        plot_curves(logs, ["loss"], tmp_path / "m.txt")


runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, normalize_argv(list(args)), input=input)


def test_normalize_argv_keys_and_legend() -> None:
    argv = ["analyze-logs", "plot-curve", "a.log.json", "--keys", "loss_cls", "loss_bbox", "b.log.json", "--legend", "A", "B", "--out", "x.png"]
    assert normalize_argv(argv) == ["analyze-logs", "plot-curve", "a.log.json", "--keys", "loss_cls", "--keys", "loss_bbox",
                                    "b.log.json", "--legend", "A", "--legend", "B", "--out", "x.png"]


def test_cli_plot_curve_and_cal_train_time_from_stdin(tmp_path: Path) -> None:
    a = tmp_path / "a.log.json"
    a.write_text(make_log())
    result = invoke("analyze-logs", "plot-curve", str(a), "-", "--keys", "loss_cls", "bbox_mAP",
                    "--legend", "a_cls", "a_map", "b_cls", "b_map", "--title", "T", "--out", str(tmp_path / "c.png"),
                    input=make_log(resume_at=2))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").exists()
    result = invoke("analyze-logs", "cal-train-time", "-", input=make_log(resume_at=2))
    assert result.exit_code == 0, result.output
    assert "-----Analyze train time of stdin-----" in result.stdout and "average iter time:" in result.stdout
    result = invoke("analyze-logs", "cal-train-time", str(a), "--json", "--include-outliers")
    assert json.loads(result.stdout)[0]["epochs"] == 3


def test_cli_errors(tmp_path: Path) -> None:
    a = tmp_path / "a.log.json"
    a.write_text(make_log())
    result = invoke("analyze-logs", "plot-curve", str(a), "--keys", "loss_mask", "--out", str(tmp_path / "c.png"))
    assert result.exit_code == 1 and "no key 'loss_mask'" in result.output
    result = invoke("analyze-logs", "plot-curve", str(a), "--keys", "loss")
    assert result.exit_code != 0 and "--out" in result.output
    result = invoke("analyze-logs", "cal-train-time", "-", "-")
    assert result.exit_code == 1 and "stdin ('-') can be given only once" in result.output


def make_iter_log(max_iters: int = 300, ipe: int = 200, interval: int = 50, eval_every: int = 100, eval_s: float = 30.0,
                  header: bool = True) -> str:
    """An IterBasedRunner log as LoggerHook writes it: global ``iter``, ``epoch`` = loader epoch, and a
    train line at an evaluation iteration whose time includes the evaluation (EvalHook runs first)."""
    lines = [json.dumps({**HEADER, "config": f"runner: {{type: IterBasedRunner, max_iters: {max_iters}}}\n"})] if header else []
    for it in range(1, max_iters + 1):
        epoch = (it - 1) // ipe + 1
        evaluated = it % eval_every == 0 or it == max_iters
        if it % interval == 0 or it == max_iters:
            t = 0.2 + (eval_s / interval if evaluated else 0.0)
            lines.append(json.dumps({"mode": "train", "epoch": epoch, "iter": it, "lr": 0.01, "memory": 0,
                                     "data_time": 0.01, "loss": 1.0, "time": t}))
        if evaluated:
            lines.append(json.dumps({"mode": "val", "epoch": epoch, "iter": it, "lr": 0.01, "bbox_mAP": it / 1000}))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("header", [True, False])
def test_cal_train_time_leaves_out_evaluation_lines(header: bool) -> None:
    log = parse_log(make_iter_log(header=header), "it.log.json")
    assert log.runner == ("IterBasedRunner" if header else None) and not log.by_epoch
    t = cal_train_time(log, include_outliers=True)
    assert t.eval_lines_excluded == 3  # iterations 100, 200, 300
    assert t.average_iter_time == pytest.approx(0.2) and t.slowest_time == pytest.approx(0.2)
    assert "3 train line(s) left out: their time includes an evaluation" in t.format()
    # the train curve stays over the global iteration, the metric over iterations
    x, _, unit = curve(log, "loss")
    assert unit == "iter" and x.tolist() == [50, 100, 150, 200, 250, 300]
    x, _, unit = curve(log, "bbox_mAP")
    assert unit == "iter" and x.tolist() == [100, 200, 300]


def test_cal_train_time_keeps_epoch_end_lines_of_epoch_based_runs() -> None:
    # epoch-based: evaluation runs after the epoch, outside the timed iterations
    log = parse_log(make_log(epochs=2), "e")  # no header: train iter restarting tells the kind
    assert log.by_epoch and cal_train_time(log).eval_lines_excluded == 0 and len(log.train) == 8
    text = make_log(epochs=1)
    with_header = json.dumps({**HEADER, "config": "runner: {type: EpochBasedRunner, max_epochs: 1}\n"}) + "\n" + text
    log = parse_log(with_header, "e")
    assert log.runner == "EpochBasedRunner" and log.by_epoch
    t = cal_train_time(log)
    assert t.eval_lines_excluded == 0 and "left out" not in t.format()


def test_cli_cal_train_time_with_evaluation_entry(tmp_path: Path) -> None:
    a = tmp_path / "it.log.json"
    a.write_text(make_iter_log())
    result = invoke("analyze-logs", "cal-train-time", str(a), "--json")
    assert result.exit_code == 0, result.output
    (figures,) = json.loads(result.stdout)
    assert figures["average_iter_time"] == pytest.approx(0.2, abs=1e-6) and figures["eval_lines_excluded"] == 3
    only_eval = "\n".join(line for line in make_iter_log(max_iters=100, interval=100).splitlines() if '"iter": 100' in line)
    result = invoke("analyze-logs", "cal-train-time", "-", input=only_eval)
    assert result.exit_code == 1 and "no train line with a 'time' value (1 line(s) holding an evaluation left out)" in result.output
