"""`det benchmark`: timings. `det benchmark PRESET [CKPT]` (the `model` subcommand) times a model or
its data loader and counts FLOPs; `det benchmark kernels` times the NMS and RoIAlign backends."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from detcli.cli._common import err_console, fail, handle_errors, print_json

#: subcommands of `det benchmark`; any other first word is a preset (see detcli.cli.normalize_argv)
SUBCOMMANDS = ("model", "kernels")

app = typer.Typer(
    help="Measure speed: [bold]det benchmark PRESET [CKPT][/] (same as [bold]model[/]) times a model "
    "(FPS, latency, memory, FLOPs); [bold]kernels[/] times NMS and RoIAlign on every available ops backend.",
    rich_markup_mode="rich",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """Measure speed: `det benchmark PRESET [CKPT]` (= `det benchmark model ...`) or `det benchmark kernels`."""


@app.command("model")
@handle_errors
def model(
    preset: Annotated[str, typer.Argument(help="Preset name or YAML file; or MODEL.onnx alone (its stored config is used).")],
    checkpoint: Annotated[Optional[str], typer.Argument(help="Checkpoint; without it the model has random weights (same speed). MODEL.onnx times the exported graph in ONNX Runtime.", metavar="[CKPT]")] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto (onnxruntime for a .onnx file, else pytorch), pytorch or onnxruntime.")] = "auto",
    task: Annotated[str, typer.Option("--task", help="inference (data.test, one image at a time) or dataloader (data.train loader).")] = "inference",
    max_iter: Annotated[int, typer.Option("--max-iter", min=1, help="Iterations, warm-up included (a shorter split is looped over).")] = 2000,
    num_warmup: Annotated[int, typer.Option("--num-warmup", min=0, help="First iterations left out of the timings.")] = 5,
    log_interval: Annotated[int, typer.Option("--log-interval", min=1, help="A progress line on stderr every N iterations.")] = 50,
    fuse_conv_bn: Annotated[bool, typer.Option("--fuse-conv-bn", help="Fold BatchNorm layers into the convolutions first (inference).")] = False,
    flops: Annotated[bool, typer.Option("--flops", help="Count FLOPs (2 per multiply-add) and parameters of the network instead of timing.")] = False,
    shape: Annotated[Optional[tuple[int, int]], typer.Option("--shape", help="H W of the --flops input (default: the test scale, landscape, padded to 32).", metavar="H W")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
) -> None:
    """Time a preset's model: FPS, latency median/p90, peak memory and the data / forward /
    post-processing split; or with --flops its FLOPs and parameters. Progress lines go to stderr."""
    from detcli.config import apply_overrides, check_schema, load_config, resolve_preset_path

    model_file = checkpoint if checkpoint is not None else (preset if preset.lower().endswith(".onnx") else None)
    if backend == "auto":
        backend = "onnxruntime" if model_file is not None and model_file.lower().endswith(".onnx") else "pytorch"
    if backend == "onnxruntime" and flops:
        raise fail("--flops counts a PyTorch model's FLOPs; drop --backend onnxruntime and the .onnx file")
    if checkpoint is None and model_file is not None:  # det benchmark MODEL.onnx: the graph's stored config
        from detcli.engine.onnx_export import load_onnx_config

        cfg = apply_overrides(load_onnx_config(model_file), cfg_options or [])
        check_schema(cfg, model_file)
        checkpoint = model_file
    else:
        cfg = load_config(str(resolve_preset_path(preset)), cfg_options)
    if flops:
        from detcli.tools.benchmark import count_flops, format_count

        fr = count_flops(cfg, shape, checkpoint, fuse_conv_bn)
        if json_out:
            print_json(fr.to_dict())
            return
        typer.echo(f"input shape: (1, 3, {fr.shape[0]}, {fr.shape[1]})")
        typer.echo(f"FLOPs: {format_count(fr.flops, 'FLOPs')}  (= {format_count(fr.flops / 2, 'MACs')}; mmdet's get_flops reports MACs)")
        typer.echo(f"parameters: {format_count(fr.params)}")
        for name, count in fr.params_by_module.items():
            typer.echo(f"  {name}: {format_count(fr.by_module.get(name, 0), 'FLOPs')}, {format_count(count)} parameters")
        return
    from detcli.tools.benchmark import benchmark

    result = benchmark(cfg, checkpoint, backend=backend, task=task, max_iter=max_iter, num_warmup=num_warmup, log_interval=log_interval,
                       fuse_conv_bn=fuse_conv_bn, device=device, log=lambda line: err_console.print(line, markup=False))
    if json_out:
        print_json(result.to_dict())
        return
    lat, split = result.latency_ms, result.split_ms
    if result.task == "inference":
        typer.echo(f"model: {result.weights}{f', {result.fused_conv_bn} conv+BN fused' if result.fused_conv_bn else ''}")
    typer.echo(f"{result.task} on {result.device}: {result.iterations} timed iterations after {result.num_warmup} warm-up, "
               f"batch {result.batch_size}")
    typer.echo(f"fps: {result.fps:.2f} img/s")
    typer.echo(f"latency per iteration: median {lat['median']:.2f} ms, p90 {lat['p90']:.2f} ms, mean {lat['mean']:.2f} ms")
    typer.echo("split (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
    typer.echo(f"peak memory: {result.peak_memory_mb:.0f} MiB ({result.memory_kind})")


@app.command("kernels")
@handle_errors
def kernels(
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed calls per measurement (median reported).")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as one JSON list on stdout.")] = False,
) -> None:
    """Time NMS (1k, 5k, 20k random boxes) and RoIAlign (256 channels x 1000 RoIs) on every ops backend
    available here (torchvision, the plain-PyTorch NMS, and the CuPy kernels on a GPU), with the speed
    ratio against torchvision (> 1 is faster). Progress goes to stderr."""
    from rich.console import Console
    from rich.table import Table

    from detcli.ops.benchmark import run_kernel_benchmark

    rows = run_kernel_benchmark(repeats=repeats, progress=lambda msg: err_console.print(f"[dim]{msg}[/]"))
    if json_out:
        print_json([row.to_dict() for row in rows])
        return
    table = Table(
        title=f"ops kernels (median of {repeats})",
        caption="speed-up = torchvision time / backend time (> 1: faster than torchvision)",
    )
    for column in ("op", "size", "device", "backend", "median ms", "speed-up"):
        table.add_column(column, justify="right" if column in ("median ms", "speed-up") else "left")
    for row in rows:
        table.add_row(row.op, row.size, row.device, row.backend, f"{row.median_s * 1e3:.2f}", f"{row.ratio:.2f}x")
    Console().print(table)
