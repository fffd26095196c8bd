"""The CLI parses arguments, calls one library function with the right kwargs, and renders errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import detcli.engine
from detcli import __version__
from detcli.cli import app, normalize_argv

runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, normalize_argv(list(args)))


class Recorder:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.result


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"det {__version__}"


def test_help_lists_subcommands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("train", "test", "eval", "infer", "config", "env", "convert-dataset", "benchmark"):
        assert name in result.output


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "p.yaml", "--cfg-options", "a=1", "b.c=2"], ["train", "p.yaml", "--cfg-options", "a=1", "--cfg-options", "b.c=2"]),
        (["test", "p", "c.pth", "--metric", "bbox", "proposal", "--json"], ["test", "p", "c.pth", "--metric", "bbox", "--metric", "proposal", "--json"]),
        (["train", "p.yaml", "--resume"], ["train", "p.yaml", "--resume", "auto"]),
        (["train", "--resume", "p.yaml"], ["train", "--resume", "auto", "p.yaml"]),
        (["train", "p.yaml", "--resume", "w/epoch_3.pth"], ["train", "p.yaml", "--resume", "w/epoch_3.pth"]),
        (["test", "--metric", "bbox", "p.yaml", "c.pth"], ["test", "--metric", "bbox", "p.yaml", "c.pth"]),
    ],
)
def test_normalize_argv(argv: list[str], expected: list[str]) -> None:
    assert normalize_argv(argv) == expected


def test_train_calls_engine_with_parsed_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = Recorder(SimpleNamespace(work_dir=tmp_path, last_checkpoint=tmp_path / "latest.pth", best_checkpoint=None, metrics={"bbox_mAP": 0.5}))
    monkeypatch.setattr(detcli.engine, "train", rec)
    result = invoke(
        "train", "quickstart", "--work-dir", str(tmp_path), "--cfg-options", "optimizer.lr=0.5", "seed=3",
        "--resume", "--device", "cpu", "--no-validate", "--auto-scale-lr", "--json",
    )
    assert result.exit_code == 0, result.output
    (cfg,), kwargs = rec.calls[0]
    assert cfg["optimizer"]["lr"] == 0.5 and cfg["seed"] == 3
    assert kwargs["work_dir"] == tmp_path
    assert kwargs["resume"] is True and kwargs["validate"] is False and kwargs["auto_scale_lr"] is True
    assert kwargs["cfg_source"].endswith("quickstart.yaml")
    assert json.loads(result.stdout)["metrics"] == {"bbox_mAP": 0.5}


def test_train_default_work_dir_is_preset_stem(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(SimpleNamespace(work_dir=Path("w"), last_checkpoint=None, best_checkpoint=None, metrics={}))
    monkeypatch.setattr(detcli.engine, "train", rec)
    assert invoke("train", "quickstart").exit_code == 0
    assert rec.calls[0][1]["work_dir"] == Path("work_dirs/quickstart")


def test_test_and_eval_are_one_command(monkeypatch: pytest.MonkeyPatch) -> None:
    res = SimpleNamespace(metrics={"bbox_mAP": 0.25}, summary="Average Precision ...", classwise_table="", out=None)
    for name in ("test", "eval"):
        rec = Recorder(res)
        monkeypatch.setattr(detcli.engine, "test", rec)
        result = invoke(name, "quickstart", "ckpt.pth", "--metric", "bbox", "proposal", "--eval-options", "classwise=true", "--json")
        assert result.exit_code == 0, result.output
        (cfg, ckpt), kwargs = rec.calls[0]
        assert ckpt == "ckpt.pth" and cfg["model"]["type"] == "FCOS"
        assert kwargs["metrics"] == ["bbox", "proposal"] and kwargs["classwise"] is True
        assert json.loads(result.stdout) == {"bbox_mAP": 0.25}


def test_test_checkpoint_alone_passes_no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(SimpleNamespace(metrics={}, summary="", classwise_table="", out=None))
    monkeypatch.setattr(detcli.engine, "test", rec)
    assert invoke("test", "ckpt.pth").exit_code == 0
    assert rec.calls[0][0] == (None, "ckpt.pth")


def test_format_only_needs_out() -> None:
    result = invoke("test", "quickstart", "c.pth", "--format-only")
    assert result.exit_code == 1 and "--format-only needs --out" in result.output


def test_unknown_eval_option() -> None:
    result = invoke("test", "quickstart", "c.pth", "--eval-options", "classwize=true")
    assert result.exit_code == 1 and "unknown option(s) classwize" in result.output


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    return lines[0]


def test_missing_preset_is_one_red_line(tmp_path: Path) -> None:
    line = _one_error_line(invoke("train", str(tmp_path / "nope.yaml"), "--work-dir", str(tmp_path / "w")))
    assert "nope.yaml: no such preset file" in line
    assert not (tmp_path / "w").exists()


def test_yaml_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {type: FCOS\n")
    line = _one_error_line(invoke("train", str(bad), "--work-dir", str(tmp_path / "w")))
    assert "bad.yaml: YAML syntax error at line" in line
    assert not (tmp_path / "w").exists()


def test_unknown_type_suggests(tmp_path: Path) -> None:
    line = _one_error_line(invoke("train", "quickstart", "--work-dir", str(tmp_path / "w"), "--cfg-options", "model.bbox_head.type=FCOSHaed"))
    assert "model.bbox_head.type" in line and "did you mean 'FCOSHead'" in line
    assert not (tmp_path / "w").exists()


def test_unknown_key_in_typed_node(tmp_path: Path) -> None:
    line = _one_error_line(invoke("config", "check", "quickstart", "--cfg-options", "model.neck.out_channel=3"))
    assert "model.neck.out_channel" in line and "did you mean 'out_channels'" in line


def test_bad_override_path(tmp_path: Path) -> None:
    line = _one_error_line(invoke("train", "quickstart", "--work-dir", str(tmp_path / "w"), "--cfg-options", "optimzer.lr=1"))
    assert "did you mean 'optimizer'" in line
    assert not (tmp_path / "w").exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"this is not a checkpoint")
    line = _one_error_line(invoke("test", "quickstart", str(fake)))
    assert "fake.pth" in line


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_config_show_round_trips() -> None:
    import yaml

    from detcli.config import load_config

    result = invoke("config", "show", "quickstart", "--cfg-options", "optimizer.lr=0.123")
    assert result.exit_code == 0
    shown = yaml.safe_load(result.stdout)
    assert shown == load_config("quickstart", ["optimizer.lr=0.123"])


def test_config_list_names_quickstart() -> None:
    result = invoke("config", "list", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["quickstart"]["box_ap"] is None and rows["quickstart"]["url"] is None


def test_env_json_has_versions() -> None:
    result = invoke("env", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in ("det", "torch", "torchvision", "cupy", "onnx", "cuda_available", "ops_backend"):
        assert key in info
    assert info["det"] == __version__


def test_infer_needs_inputs() -> None:
    result = invoke("infer", "ckpt.pth")
    assert result.exit_code == 1 and "no inputs" in result.output


def test_infer_streams_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.engine.inference as inference

    def fake_infer(checkpoint: str, items: list[str], **kwargs: Any):  # type: ignore[no-untyped-def]
        assert checkpoint == "c.pth" and items == ["a.jpg", "b.jpg"]
        assert kwargs["score_thr"] == 0.5 and kwargs["out_dir"] == "o"
        for name in items:
            yield SimpleNamespace(to_json=lambda name=name: {"file": name, "boxes": []})

    monkeypatch.setattr(inference, "infer", fake_infer)
    result = invoke("infer", "c.pth", "a.jpg", "b.jpg", "--score-thr", "0.5", "--out-dir", "o")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == ["a.jpg", "b.jpg"]


def test_infer_reads_paths_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.engine.inference as inference

    seen: list[list[str]] = []

    def fake_infer(checkpoint: str, items: list[str], **kwargs: Any):  # type: ignore[no-untyped-def]
        seen.append(items)
        return iter(())

    monkeypatch.setattr(inference, "infer", fake_infer)
    result = runner.invoke(app, ["infer", "c.pth", "-"], input="x.jpg\n\ny.jpg\n")
    assert result.exit_code == 0, result.output
    assert seen == [["x.jpg", "y.jpg"]]


def test_unknown_ops_backend() -> None:
    line = _one_error_line(invoke("infer", "c.pth", "a.jpg", "--ops", "cuda-magic"))
    assert "'cuda-magic' is not an ops backend" in line


def test_train_passes_launcher_and_sync_bn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rec = Recorder(SimpleNamespace(work_dir=tmp_path, last_checkpoint=None, best_checkpoint=None, metrics={}, rank=1))
    monkeypatch.setattr(detcli.engine, "train", rec)
    result = invoke("train", "quickstart", "--launcher", "slurm", "--sync-bn", "--json")
    assert result.exit_code == 0, result.output
    assert rec.calls[0][1]["launcher"] == "slurm" and rec.calls[0][1]["sync_bn"] is True
    assert result.stdout == ""  # only rank 0 prints


def test_nproc_relaunches_through_torch_distributed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.engine.dist as dist

    calls: list[tuple[int, list[str]]] = []
    monkeypatch.setattr(dist, "launch_local", lambda n, args: calls.append((n, list(args))) or 0)
    monkeypatch.setattr("sys.argv", ["det", "test", "quickstart", "c.pth", "--nproc", "2", "--json"])
    assert invoke("test", "quickstart", "c.pth", "--nproc", "2", "--json").exit_code == 0
    assert calls == [(2, ["test", "quickstart", "c.pth", "--json"])]
