"""`det train`: train a detector from a preset."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from detcli.cli._common import RichProgress, err_console, handle_errors, print_json, set_ops_backend

DEVICE_HELP = "cpu, cuda or cuda:N (cuda under a launcher: cuda:LOCAL_RANK)."
LAUNCHER_HELP = "auto (torchrun's RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT when set), none, pytorch, torchrun or slurm (SLURM_* variables)."
NPROC_HELP = "Re-launch as N processes on this machine through torch.distributed.run (one per GPU; gloo on CPU)."


@handle_errors
def train(
    preset: Annotated[str, typer.Argument(help="Preset YAML file, or the name of a shipped preset.")],
    work_dir: Annotated[Optional[Path], typer.Option("--work-dir", help="Run directory (default: work_dirs/<preset stem>).")] = None,
    resume: Annotated[
        Optional[str],
        typer.Option("--resume", help="Resume from a checkpoint; alone: latest.pth of the work dir.", metavar="[PATH]"),
    ] = None,
    load_from: Annotated[Optional[str], typer.Option("--load-from", help="Start from these weights (fine-tuning): a det, MMDetection 2.x/3.x or torchvision checkpoint, a URL or zoo:PRESET; classification layers of another shape stay random.")] = None,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Let --load-from / init_cfg loads leave more than the classification layers random.")] = False,
    cfg_options: Annotated[Optional[list[str]], typer.Option("--cfg-options", help="Override config keys: a.b.c=V (several allowed).")] = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default: the preset's, else 0).")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Use deterministic algorithms.")] = False,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip evaluation during training.")] = False,
    auto_scale_lr: Annotated[bool, typer.Option("--auto-scale-lr", help="Scale the lr by batch size / auto_scale_lr.base_batch_size.")] = False,
    ops: Annotated[Optional[str], typer.Option("--ops", help="Ops backend: auto, cupy, torch or torchvision (default: $DET_OPS, else auto).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
    launcher: Annotated[str, typer.Option("--launcher", help=LAUNCHER_HELP)] = "auto",
    nproc: Annotated[Optional[int], typer.Option("--nproc", help=NPROC_HELP, min=1)] = None,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="Convert BatchNorm to SyncBatchNorm when distributed (CUDA).")] = False,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (CUDA): float16 autocast with a dynamic loss scale, as fp16: {loss_scale: dynamic}.")] = False,
) -> None:
    """Train a detector. Checkpoints, logs and the resolved config go to the work dir."""
    if nproc is not None and nproc > 1:
        from detcli.engine.dist import launch_local, strip_option

        raise typer.Exit(launch_local(nproc, strip_option(sys.argv[1:], "--nproc")))
    from detcli.config import load_config, resolve_preset_path
    from detcli.engine import train as run_train

    set_ops_backend(ops)
    source = str(resolve_preset_path(preset))
    cfg = load_config(source, cfg_options)  # train() validates it (once) before any work
    run_dir = work_dir or Path(cfg.get("work_dir") or Path("work_dirs") / Path(source).stem)
    resume_arg: str | bool | None = True if resume == "auto" else resume
    with RichProgress() as progress:
        result = run_train(
            cfg,
            work_dir=Path(run_dir),
            cfg_source=source,
            resume=resume_arg,
            load_from=load_from,
            device=device,
            seed=seed,
            deterministic=deterministic,
            validate=not no_validate,
            auto_scale_lr=auto_scale_lr,
            argv=["det", *sys.argv[1:]],
            progress=progress,
            launcher=launcher,
            sync_bn=sync_bn,
            allow_partial=allow_partial,
            amp=amp,
        )
    if getattr(result, "rank", 0) != 0:
        return  # rank 0 reports for the job
    metrics: dict[str, Any] = dict(result.metrics or {})
    summary: dict[str, Any] = {
        "work_dir": str(result.work_dir),
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "best_checkpoint": str(result.best_checkpoint) if getattr(result, "best_checkpoint", None) else None,
        "metrics": metrics,
        "weights_loaded": list(getattr(result, "weights_loaded", []) or []),
    }
    if json_out:
        print_json(summary)
    else:
        err_console.print(f"[green]done[/]: run directory {summary['work_dir']}")
        if summary["last_checkpoint"]:
            err_console.print(f"last checkpoint: {summary['last_checkpoint']}")
        if summary["best_checkpoint"]:
            err_console.print(f"best checkpoint: {summary['best_checkpoint']}")
        for k, v in metrics.items():
            err_console.print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
