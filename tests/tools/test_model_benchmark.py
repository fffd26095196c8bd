"""det benchmark PRESET: conv+BN fusion keeps outputs, timing results have the right shape,
FLOPs/parameters add up, and `det benchmark kernels` still dispatches next to `det benchmark PRESET`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detcli.cli import app, normalize_argv
from detcli.config import load_config, resolve_preset_path
from detcli.engine.builders import build_model
from detcli.errors import ConfigError
from detcli.models.fuse import fuse_conv_bn
from detcli.tools.benchmark import (
    benchmark,
    count_flops,
    default_flops_shape,
    format_count,
)

SMALL = ["data.test.num_images=3", "data.train.num_images=4", "data.samples_per_gpu=2"]


def shapes_cfg() -> dict:
    return load_config(str(resolve_preset_path("retinanet_r18_fpn_shapes")), SMALL)


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_fuse_conv_bn_keeps_the_network_output() -> None:
    torch.manual_seed(0)
    model = build_model(shapes_cfg()).eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model.bbox_head(model.extract_feat(x))
        n = fuse_conv_bn(model)
        after = model.bbox_head(model.extract_feat(x))
    assert n == 20  # ResNet-18: stem 1 + 16 block convs + 3 downsamples
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(before, after):
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)


def test_fuse_skips_bn_not_after_a_conv() -> None:
    m = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    assert fuse_conv_bn(m) == 0 and isinstance(m[3], nn.BatchNorm2d)


def test_inference_benchmark_counts_timed_iterations() -> None:
    lines: list[str] = []
    r = benchmark(shapes_cfg(), max_iter=5, num_warmup=2, log_interval=1, fuse_conv_bn=True, log=lines.append)
    assert r.task == "inference" and r.iterations == 3 and r.batch_size == 1 and r.num_warmup == 2
    assert r.weights.startswith("random init") and r.fused_conv_bn == 20
    assert set(r.split_ms) == {"data", "forward", "postprocess"} and all(v >= 0 for v in r.split_ms.values())
    assert r.latency_ms["p90"] >= r.latency_ms["median"] > 0 and r.fps > 0
    assert r.split_ms["forward"] <= r.latency_ms["p90"]
    assert r.memory_kind == "cpu_rss" and r.peak_memory_mb > 0
    # 3 test images, 5 iterations: the split is looped over; lines from iteration 3 on (after warm-up)
    assert [line.split(":")[0] for line in lines] == ["iter 3/5", "iter 4/5", "iter 5/5"]
    assert set(r.to_dict()) >= {"fps", "latency_ms", "split_ms", "peak_memory_mb"}


def test_dataloader_benchmark() -> None:
    r = benchmark(shapes_cfg(), task="dataloader", max_iter=3, num_warmup=1, log_interval=10)
    assert r.task == "dataloader" and r.iterations == 2 and r.batch_size == 2 and r.fps > 0
    assert set(r.split_ms) == {"data"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"task": "train"}, "--task 'train'"),
    ({"max_iter": 5, "num_warmup": 5}, "--max-iter 5 must be larger"),
    ({"log_interval": 0}, "--log-interval 0"),
])
def test_bad_benchmark_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        benchmark(shapes_cfg(), **kwargs)


def test_flops_and_parameters_add_up() -> None:
    cfg = shapes_cfg()
    r = count_flops(cfg, (64, 96))
    model = build_model(cfg)
    assert r.params == sum(p.numel() for p in model.parameters())
    assert sum(r.params_by_module.values()) == r.params
    assert set(r.by_module) == {"backbone", "neck", "bbox_head"} and sum(r.by_module.values()) == r.flops
    # the stem conv alone: 64 x 3 x 7 x 7 weights at 32 x 48 outputs, 2 FLOPs per multiply-add
    assert r.by_module["backbone"] > 2 * 64 * 3 * 49 * 32 * 48
    # FLOPs of a conv network scale with the pixels
    assert count_flops(cfg, (128, 192)).flops == pytest.approx(4 * r.flops, rel=0.02)
    assert default_flops_shape(cfg) == (256, 256)
    coco = load_config(str(resolve_preset_path("retinanet_r50_fpn_1x_coco")))
    assert default_flops_shape(coco) == (800, 1344)
    with pytest.raises(ConfigError, match="--shape 0 64"):
        count_flops(cfg, (0, 64))


def test_format_count() -> None:
    assert format_count(2.5e9, "FLOPs") == "2.5 GFLOPs"
    assert format_count(11_865_992) == "11.9 M"
    assert format_count(999) == "999"


@pytest.mark.parametrize(("argv", "expected"), [
    (["benchmark", "p.yaml", "c.pth"], ["benchmark", "model", "p.yaml", "c.pth"]),
    (["benchmark", "--max-iter", "3", "p"], ["benchmark", "model", "--max-iter", "3", "p"]),
    (["benchmark", "kernels", "--json"], ["benchmark", "kernels", "--json"]),
    (["benchmark", "model", "p"], ["benchmark", "model", "p"]),
    (["benchmark", "--help"], ["benchmark", "--help"]),
    (["--debug", "benchmark", "p"], ["--debug", "benchmark", "model", "p"]),
    (["test", "benchmark", "c.pth"], ["test", "benchmark", "c.pth"]),
])
def test_normalize_benchmark_argv(argv: list[str], expected: list[str]) -> None:
    assert normalize_argv(argv) == expected


def invoke(*args: str):
    return CliRunner().invoke(app, normalize_argv(list(args)))


def test_cli_benchmark_preset_and_kernels_coexist(monkeypatch: pytest.MonkeyPatch) -> None:
    import detcli.ops.benchmark as ops
    import detcli.tools.benchmark as eng

    calls: list = []

    def fake(cfg, checkpoint, **kw):
        calls.append((checkpoint, kw))
        return eng.BenchmarkResult("inference", "cpu", "random init (no checkpoint)", 0, 1, 2, 1, 10.0,
                                   {"median": 100.0, "p90": 120.0, "mean": 105.0},
                                   {"data": 1.0, "forward": 90.0, "postprocess": 10.0}, 500.0, "cpu_rss")

    monkeypatch.setattr(eng, "benchmark", fake)
    r = invoke("benchmark", "retinanet_r18_fpn_shapes", "--max-iter", "3", "--num-warmup", "1", "--fuse-conv-bn", "--json")
    assert r.exit_code == 0, r.output
    assert calls == [(None, {"backend": "pytorch", "task": "inference", "max_iter": 3, "num_warmup": 1, "log_interval": 50,
                             "fuse_conv_bn": True, "device": "cpu", "log": calls[0][1]["log"]})]
    assert json.loads(r.stdout)["fps"] == 10.0
    r = invoke("benchmark", "retinanet_r18_fpn_shapes", "ckpt.pth")
    assert r.exit_code == 0 and calls[-1][0] == "ckpt.pth"
    assert "fps: 10.00 img/s" in r.stdout and "median 100.00 ms, p90 120.00 ms" in r.stdout
    assert "forward 90.00" in r.stdout and "random init" in r.stdout
    monkeypatch.setattr(ops, "run_kernel_benchmark", lambda repeats, progress: [
        SimpleNamespace(to_dict=lambda: {"op": "nms"}, op="nms", size="1k", device="cpu", backend="torch", median_s=0.001, ratio=1.0)])
    r = invoke("benchmark", "kernels", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"op": "nms"}]
    r = invoke("benchmark", "--help")
    assert r.exit_code == 0 and "kernels" in r.stdout and "model" in r.stdout


def test_cli_flops_and_errors(tmp_path: Path) -> None:
    r = invoke("benchmark", "retinanet_r18_fpn_shapes", "--flops", "--shape", "64", "64")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "input shape: (1, 3, 64, 64)"
    assert r.stdout.splitlines()[1].startswith("FLOPs: ") and "parameters: 11.9 M" in r.stdout
    r = invoke("benchmark", "retinanet_r18_fpn_shapes", "--task", "train")
    assert r.exit_code == 1 and "--task 'train'" in r.output
    r = invoke("benchmark", "retinanet_r18_fpn_shapes", str(tmp_path / "missing.pth"), "--max-iter", "2", "--num-warmup", "0")
    assert r.exit_code == 1 and "missing.pth" in r.output


def test_inference_benchmark_loads_a_checkpoint(tmp_path: Path) -> None:
    from detcli.engine.checkpoint import atomic_save, make_checkpoint

    cfg = shapes_cfg()
    ckpt = atomic_save(make_checkpoint(build_model(cfg), epoch=0, iter=0, config=cfg, classes=["a", "b", "c", "d"]),
                       tmp_path / "m.pth")
    r = benchmark(cfg, ckpt, max_iter=2, num_warmup=1)
    assert r.weights == f"checkpoint {ckpt}" and r.iterations == 1 and r.fused_conv_bn == 0


def test_onnxruntime_benchmark_of_an_exported_graph(tmp_path: Path) -> None:
    """`det benchmark MODEL.onnx` times the graph in ONNX Runtime (config from the file), the split puts the
    session's run under forward; the PyTorch-only options are refused with the reason."""
    from detcli.engine.checkpoint import atomic_save, make_checkpoint
    from detcli.engine.onnx_export import export_onnx

    cfg = shapes_cfg()
    ckpt = atomic_save(make_checkpoint(build_model(cfg), epoch=0, iter=0, config=cfg, classes=["a", "b", "c", "d"]),
                       tmp_path / "m.pth")
    graph = tmp_path / "m.onnx"
    export_onnx(None, ckpt, output_file=graph, dynamic_export=True, verify=False)
    r = benchmark(cfg, graph, backend="onnxruntime", max_iter=3, num_warmup=1)
    assert r.weights == f"ONNX Runtime graph {graph}" and r.iterations == 2 and r.task == "inference"
    assert r.split_ms["forward"] > 0 and r.split_ms["forward"] <= r.latency_ms["median"] * 1.5
    with pytest.raises(ConfigError, match="pass MODEL.onnx"):
        benchmark(cfg, None, backend="onnxruntime", max_iter=2, num_warmup=0)
    with pytest.raises(ConfigError, match="folds BatchNorm"):
        benchmark(cfg, graph, backend="onnxruntime", fuse_conv_bn=True, max_iter=2, num_warmup=0)
    with pytest.raises(ConfigError, match="--backend 'tensorrt'"):
        benchmark(cfg, graph, backend="tensorrt", max_iter=2, num_warmup=0)
    # the CLI: the graph alone (its stored config, overridable), or a preset and the graph
    r = invoke("benchmark", str(graph), "--max-iter", "2", "--num-warmup", "1", "--json",
               "--cfg-options", "data.test.num_images=2")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["weights"].startswith("ONNX Runtime graph") and out["iterations"] == 1
    r = invoke("benchmark", "retinanet_r18_fpn_shapes", str(graph), "--max-iter", "2", "--num-warmup", "1", "--json",
               "--cfg-options", *SMALL)
    assert r.exit_code == 0 and json.loads(r.stdout)["iterations"] == 1, r.output
    r = invoke("benchmark", str(graph), "--flops")
    assert r.exit_code == 1 and "--flops counts a PyTorch model" in r.output
