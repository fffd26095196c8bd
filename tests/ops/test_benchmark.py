"""`det benchmark kernels`: the library function and the command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from detcli.cli.benchmark import app
from detcli.ops import benchmark
from detcli.ops.benchmark import BenchmarkRow, run_kernel_benchmark


def test_rows_cover_every_cpu_backend_with_ratios() -> None:
    messages: list[str] = []
    rows = run_kernel_benchmark(repeats=1, nms_sizes=(50, 300), roi_align_size=(4, 20), progress=messages.append)
    assert [(r.op, r.size, r.backend) for r in rows] == [
        ("nms", "50 boxes", "torchvision"),
        ("nms", "50 boxes", "torch"),
        ("nms", "300 boxes", "torchvision"),
        ("nms", "300 boxes", "torch"),
        ("roi_align", "4ch x 20 rois", "torchvision"),
    ]
    assert all(r.device == "cpu" and r.median_s > 0 and r.repeats == 1 for r in rows)
    assert rows[0].ratio == 1.0 and rows[4].ratio == 1.0
    assert rows[1].ratio == pytest.approx(rows[0].median_s / rows[1].median_s)
    assert len(messages) == 5 and messages[0] == "nms 50 boxes on cpu: torchvision"
    assert set(rows[0].to_dict()) == {"op", "size", "backend", "device", "median_s", "ratio", "repeats"}


def test_repeats_must_be_positive() -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        run_kernel_benchmark(repeats=0)


ROWS = [
    BenchmarkRow("nms", "1000 boxes", "torchvision", "cpu", 0.002, 1.0, 3),
    BenchmarkRow("nms", "1000 boxes", "torch", "cpu", 0.001, 2.0, 3),
]


def test_cli_json(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        kwargs["progress"]("working")
        return ROWS

    monkeypatch.setattr(benchmark, "run_kernel_benchmark", fake)
    result = CliRunner().invoke(app, ["kernels", "--repeats", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert calls[0]["repeats"] == 3
    data = json.loads(result.stdout)
    assert data == [r.to_dict() for r in ROWS]


def test_cli_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benchmark, "run_kernel_benchmark", lambda **kwargs: ROWS)
    result = CliRunner().invoke(app, ["kernels"])
    assert result.exit_code == 0, result.output
    assert "torchvision" in result.stdout and "2.00x" in result.stdout and "1.00" in result.stdout


def test_cli_rejects_zero_repeats() -> None:
    result = CliRunner().invoke(app, ["kernels", "--repeats", "0"])
    assert result.exit_code != 0
