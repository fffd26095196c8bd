"""``det train``: set up a run directory, build everything from the config and run the Runner.

A run directory (``work_dir``) ends up holding::

    <preset stem>.yaml          the resolved config (also inside every checkpoint)
    manifest.json               argv, versions, seed, device, dataset fingerprints, start/end time
    <YYYYmmdd_HHMMSS>.log       text log
    <YYYYmmdd_HHMMSS>.log.json  JSON lines (mmdet keys; readable by analyze-logs)
    epoch_N.pth / iter_N.pth    periodic checkpoints, latest.pth the newest of them
    .det.lock                   while a run writes here: its PID and host (a second run refuses)
    best_<metric>_epoch_N.pth   the best checkpoint so far (with evaluation.save_best)

``resume`` restores weights, optimizer, epoch/iteration, best-so-far and RNG states, and the lr
is a pure function of the position, so an interrupted and resumed run ends with the same weights
as an uninterrupted one (on CPU). SIGTERM (Slurm preemption) or Ctrl-C saves ``iter_N.pth`` after the
current iteration and raises :class:`~detcli.engine.runner.TrainingInterrupted` (resume with ``--resume``).
``load_from`` loads matching weights only and starts at epoch 0.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import logging.handlers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from detcli.config import dump_config
from detcli.engine.checkpoint import load_checkpoint, load_state_dict
from detcli.models.pretrained import load_detector_weights
from detcli.engine.dist import distributed, get_dist_info, run_on_main
from detcli.engine.environment import collect_env, configure_threads, resolve_device, set_random_seed
from detcli.engine.hooks import (
    CheckInvalidLossHook,
    CheckpointHook,
    EvalHook,
    LoggerHook,
    LrUpdaterHook,
    NumClassCheckHook,
    build_custom_hooks,
    check_num_classes,
)
from detcli.engine.lr import LrSchedule
from detcli.engine.optim import auto_scale_lr as scale_lr_in_cfg
from detcli.engine.optim import build_optimizer
from detcli.engine.progress import ProgressCallback
from detcli.engine import runlock
from detcli.engine.builders import build_model, build_split
from detcli.engine.runner import Runner, TrainingInterrupted, stop_on_signals
from detcli.engine.tester import check_mask_metrics, evaluate_detections, run_inference
from detcli.engine.zoo import resolve_checkpoint, split_zoo_spec
from detcli.engine.validate import runner_settings, validate_config
from detcli.errors import CheckpointError, ConfigError, OutputError
from detcli.fileio import check_writable_dir, clean_temp_files, write_json_atomic, write_text_atomic
from detcli.engine.evaluation import resolve_evaluation

logger = logging.getLogger(__name__)

TEXT_LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        work_dir: the run directory.
        last_checkpoint: the newest ``epoch_N.pth``/``iter_N.pth`` (``latest.pth`` points at it), or None.
        best_checkpoint: ``best_<metric>_...pth`` with ``evaluation.save_best``, or None.
        metrics: the last evaluation's metrics (empty with ``validate=False``).
        epochs: finished epochs (IterBasedRunner: data epochs begun).
        iters: finished iterations.
        json_log: the ``.log.json`` file.
        text_log: the ``.log`` file.
        manifest: ``manifest.json``.
        config_path: the resolved config written to the run directory.
        seed: the seed used.
        skipped_weights: with ``load_from``, the weights skipped for a shape mismatch (e.g. another ``num_classes``).
        weights_loaded: the load report of every ``init_cfg`` / ``load_from`` load (:meth:`LoadReport.to_dict`).
        resumed_from: the checkpoint resumed from, or None.
        rank: this process's rank (0 without distributed training); world_size: the number of processes.
    """

    work_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    metrics: dict[str, float]
    epochs: int
    iters: int
    json_log: Path | None
    text_log: Path | None
    manifest: Path
    config_path: Path
    seed: int
    skipped_weights: list[str] = field(default_factory=list)
    weights_loaded: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: Path | None = None
    rank: int = 0
    world_size: int = 1


def _resolve_resume(resume: str | bool | None, cfg: Mapping[str, Any], work_dir: Path, new_dir: bool = False) -> Path | None:
    if resume is None or resume is False:
        resume = cfg.get("resume_from")
    if resume is None or resume is False:
        return None
    if resume is True or resume == "auto":
        path = work_dir / "latest.pth"
        if not path.exists():
            if new_dir or not work_dir.is_dir():
                raise CheckpointError(
                    f"{work_dir}: no run to resume (no such work dir, so no latest.pth): start the run without "
                    "--resume, or give the work dir of the run with --work-dir"
                )
            raise CheckpointError(
                f"{work_dir}: the run has no checkpoint yet (it stopped before saving its first one, so there is no "
                "latest.pth to resume): start it fresh with the same command without --resume"
            )
        return path
    return Path(str(resume))


def _lock_work_dir(work_dir: Path) -> bool:
    """Create ``work_dir`` if needed, take its lock and remove temp files a killed run left.

    Returns:
        Whether ``work_dir`` was created here (:func:`_unlock_work_dir` removes it again if it stays empty).
    """
    check_writable_dir(work_dir, "work dir (--work-dir)")
    created = not work_dir.exists()
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{work_dir}: cannot create the work dir: {e.strerror}; choose another --work-dir") from e
    try:
        runlock.acquire(work_dir / runlock.LOCK_NAME, "work dir")
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                work_dir.rmdir()
        raise
    for stray in clean_temp_files(work_dir):
        logger.info("removed %s, left by a run killed while writing it", stray.name)
    return created


def _unlock_work_dir(work_dir: Path, created: bool) -> None:
    runlock.release(work_dir / runlock.LOCK_NAME)
    if created:
        with contextlib.suppress(OSError):
            work_dir.rmdir()  # only when empty: nothing half-written after a failure before training began


def _wrap_distributed(model: torch.nn.Module, cfg: Mapping[str, Any], dev: torch.device, *, sync_bn: bool,
                      seed: int, cfg_source: str) -> torch.nn.Module:
    """Move ``model`` to ``dev``; under a process group wrap it in DistributedDataParallel.

    Returns what training forwards through (``model`` itself with one process).
    """
    rank, world_size = get_dist_info()
    if world_size > 1 and sync_bn:
        if dev.type == "cpu":
            raise ConfigError(
                f"{cfg_source}: sync_bn: SyncBatchNorm needs CUDA devices; on CPU use GN/frozen BN "
                "(norm_eval: true) or drop --sync-bn"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        logger.info("converted BatchNorm layers to SyncBatchNorm")
    model.to(dev)
    if world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=bool(cfg.get("find_unused_parameters", False)),
    )  # broadcasts rank 0's parameters and buffers: every replica starts from the same weights
    set_random_seed(seed + rank)  # per-rank streams from here on (dropout, custom random transforms)
    return ddp


def _fingerprint(dataset: Any) -> dict[str, Any]:
    fp = getattr(dataset, "fingerprint", None)
    if callable(fp):
        return dict(fp())
    return {"num_images": len(dataset)}


def train(
    cfg: Mapping[str, Any],
    *,
    launcher: str = "auto",
    sync_bn: bool = False,
    device: str = "cpu",
    **kwargs: Any,
) -> TrainResult:
    """Train the detector described by ``cfg``, distributed when launched so (see :func:`_train`).

    Args:
        launcher: ``auto`` (torchrun's variables when set, else one process), ``none``, ``pytorch``/
            ``torchrun`` or ``slurm``: joins the process group (nccl on CUDA, gloo on CPU) and leaves it
            again at the end, also on errors. Every rank trains a DistributedDataParallel replica on
            ``samples_per_gpu`` images per iteration; rank 0 writes logs and checkpoints.
        sync_bn: convert BatchNorm layers to SyncBatchNorm (also ``cfg.sync_bn``; CUDA only).
        device: ``cpu``, ``cuda`` (``cuda:LOCAL_RANK`` under a launcher) or ``cuda:N``.
        kwargs: the keyword arguments of :func:`_train`.
    """
    dist_params = dict(cfg.get("dist_params") or {})
    with distributed(launcher, device, backend=dist_params.get("backend")) as rank_device:
        return _train(cfg, device=rank_device, sync_bn=sync_bn, **kwargs)


def _train(
    cfg: Mapping[str, Any],
    *,
    work_dir: Path,
    cfg_source: str,
    resume: str | bool | None = None,
    load_from: str | None = None,
    device: str = "cpu",
    seed: int | None = None,
    deterministic: bool = False,
    validate: bool = True,
    auto_scale_lr: bool = False,
    argv: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    sync_bn: bool = False,
    allow_partial: bool = False,
) -> TrainResult:
    """Train the detector described by ``cfg`` into ``work_dir``.

    Args:
        cfg: the resolved config (``detcli.config.load_config``); not modified.
        work_dir: the run directory (created).
        cfg_source: the preset file (names the saved config ``<stem>.yaml``; used in errors).
        resume: a checkpoint to resume from, True for ``work_dir/latest.pth``, None for ``cfg.resume_from``.
        load_from: weights to start from (epoch 0, fresh optimizer); default ``cfg.load_from``. A det,
            MMDetection 2.x/3.x or torchvision checkpoint, or a weights URI; the classification layers may
            stay random (another number of classes).
        allow_partial: let ``init_cfg`` / ``load_from`` loads leave more than the classification layers random.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        seed: random seed; default ``cfg.seed``, else 0.
        deterministic: use deterministic algorithms (also ``cfg.deterministic``).
        validate: evaluate on ``data.val`` per the ``evaluation`` section.
        auto_scale_lr: scale the lr by the batch size (also ``auto_scale_lr.enable``).
        argv: the command line, recorded in the manifest.
        progress: receives train/val progress events (rank 0 only).
        sync_bn: convert BatchNorm to SyncBatchNorm when distributed (also ``cfg.sync_bn``).

    Under a process group: the same seed on every rank builds the same initial weights (DDP also
    broadcasts rank 0's at wrap time), then each rank reseeds its own streams with ``seed + rank``;
    the data order and per-sample augmentation are functions of ``(seed, epoch, index)``, and rank
    ``r`` trains on entries ``r, r + W, ...`` of the epoch's permutation. Logged losses are means
    over ranks; ``--auto-scale-lr`` scales by ``samples_per_gpu * world_size``.

    Raises:
        ConfigError, DatasetError, CheckpointError, TrainingError (TrainingInterrupted on SIGTERM/SIGINT),
        OutputError (work dir not writable, in use by another run, disk full), DetError (device).
    """
    cfg = copy.deepcopy(dict(cfg))
    validate_config(cfg, cfg_source)
    dev = resolve_device(device)
    rank, world_size = get_dist_info()
    seed = int(seed if seed is not None else (cfg.get("seed") if cfg.get("seed") is not None else 0))
    cfg["seed"] = seed
    deterministic = bool(deterministic or cfg.get("deterministic", False))
    set_random_seed(seed, deterministic)
    if "optimizer" not in cfg:
        raise ConfigError(f"{cfg_source}: optimizer: the config has no optimizer section (e.g. {{type: SGD, lr: 0.01, momentum: 0.9}})")
    work_dir = Path(work_dir)
    timestamp = time.strftime("%Y%m%d_%H%M%S")
    text_log = work_dir / f"{timestamp}.log" if rank == 0 else None
    json_log = work_dir / f"{timestamp}.log.json" if rank == 0 else None
    package_logger = logging.getLogger("detcli")
    old_level = package_logger.level
    if rank == 0 and package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)
    if rank != 0:
        progress = None
    # set-up messages wait in memory: nothing is written to work_dir until every component was built
    setup_buffer = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
    setup_buffer.setLevel(logging.INFO)
    package_logger.addHandler(setup_buffer)
    handler: logging.Handler | None = None
    manifest_path = work_dir / "manifest.json"
    config_path = work_dir / f"{Path(cfg_source).stem}.yaml"
    manifest: dict[str, Any] = {}
    created = False
    locked = False
    try:
        if rank == 0:  # one det run per work dir; fails before any work when it is not writable
            created = _lock_work_dir(work_dir)
            locked = True
        scale_lr_in_cfg(cfg, flag=auto_scale_lr, world_size=world_size)
        resume_path = _resolve_resume(resume, cfg, work_dir, new_dir=created)
        load_from = load_from or cfg.get("load_from")
        data_cfg = cfg.get("data") or {}
        workers = int(data_cfg.get("workers_per_gpu", 0))
        threads = configure_threads(workers)
        train_set, samples_per_gpu, workers = build_split(cfg, "train", test_mode=False)
        eval_cfg = dict(cfg.get("evaluation") or {})
        val_set = None
        if validate and "val" in data_cfg and eval_cfg.get("interval", 1) > 0:
            val_set, val_samples, val_workers = build_split(cfg, "val", test_mode=True)
        datasets = {"train": train_set} | ({"val": val_set} if val_set is not None else {})
        model = build_model(cfg)
        check_num_classes(model, datasets)
        load_reports = []
        if resume_path is None:
            load_reports += model.init_weights(allow_partial=allow_partial) or []
        train_module = _wrap_distributed(model, cfg, dev, sync_bn=bool(sync_bn or cfg.get("sync_bn", False)),
                                         seed=seed, cfg_source=cfg_source)
        optimizer = build_optimizer(model, cfg["optimizer"])
        runner_type, max_epochs, max_iters = runner_settings(cfg)
        schedule = LrSchedule.from_config(cfg.get("lr_config"), max_epochs=max_epochs, max_iters=max_iters)
        lr_hook = LrUpdaterHook(schedule, optimizer)  # records each group's initial_lr before any resume

        from detcli.data import aspect_ratio_flags, build_dataloader

        persistent = bool(data_cfg.get("persistent_workers", True)) and workers > 0
        # data.group_by_aspect_ratio: every (global) batch holds only landscape or only portrait images
        flags = aspect_ratio_flags(train_set) if data_cfg.get("group_by_aspect_ratio", False) else None
        train_loader = build_dataloader(train_set, samples_per_gpu, workers, shuffle=True, seed=seed, epoch=0,
                                        num_replicas=world_size, rank=rank, persistent_workers=persistent,
                                        group_flags=flags)

        def make_loader(epoch: int) -> Any:
            # order and augmentations are functions of (seed, epoch): tell the sampler and the dataset
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            return train_loader

        iters_per_epoch = len(train_loader)
        runner = Runner(
            model, optimizer, make_loader, iters_per_epoch, work_dir,
            runner_type=runner_type, max_epochs=max_epochs, max_iters=max_iters,
            grad_clip=(cfg.get("optimizer_config") or {}).get("grad_clip"), device=dev,
            config=cfg, classes=tuple(train_set.classes), progress=progress, train_module=train_module,
        )
        runner.datasets = datasets
        runner.meta["scheduler"] = schedule.state_dict()
        runner.meta["seed"] = seed

        skipped: list[str] = []
        ckpt = None
        if resume_path is not None:
            ckpt = load_checkpoint(resume_path)
            load_state_dict(model, ckpt["state_dict"], resume_path)
            if ckpt.get("optimizer") is None:
                raise CheckpointError(
                    f"{resume_path}: saved without the optimizer state (checkpoint_config.save_optimizer: false), "
                    "so it cannot be resumed exactly; use --load-from to start from its weights"
                )
            try:
                optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{resume_path}: the optimizer state does not fit this config's optimizer: {e}") from e
            meta = ckpt["meta"]
            runner.resumed_hook_states = dict(ckpt.get("hooks") or {})
            runner.resume_state(
                meta["epoch"], meta["iter"], {"best": meta.get("best")} if meta.get("best") else None, rng_state=ckpt["rng"]
            )
            logger.info("resumed from %s at epoch %d, iteration %d", resume_path, meta["epoch"], meta["iter"])
        elif load_from:
            spec, zoo_cfg = split_zoo_spec(str(load_from), None)
            report = load_detector_weights(model, str(resolve_checkpoint(spec, zoo_cfg)), allow_partial=allow_partial,
                                           what="model (load_from)")
            load_reports.append(report)
            skipped = [m.split(":", 1)[0] for m in report.mismatched]

        # hooks
        runner.register_hook(lr_hook)
        runner.register_hook(CheckInvalidLossHook(interval=1))
        custom = build_custom_hooks(cfg.get("custom_hooks"))
        if not any(isinstance(h, NumClassCheckHook) for h, _ in custom):
            runner.register_hook(NumClassCheckHook())
        ckpt_cfg = dict(cfg.get("checkpoint_config") or {"interval": 1})
        ckpt_cfg.setdefault("by_epoch", runner.by_epoch)
        runner.register_hook(CheckpointHook(**ckpt_cfg))
        if val_set is not None:
            metric_names, eval_options = resolve_evaluation(val_set, None, eval_cfg)
            check_mask_metrics(model, metric_names)

            def evaluate_fn(model_: torch.nn.Module, progress_: ProgressCallback | None) -> Any:
                dets = run_inference(
                    model_, val_set, samples_per_gpu=val_samples, workers_per_gpu=val_workers, device=dev,
                    cfg=cfg, progress=progress_, phase="val", epoch=runner.epoch, encode_masks=True,
                )
                return run_on_main(lambda: evaluate_detections(  # once, on rank 0; result broadcast
                    val_set, dets, metric_names, eval_options
                ))

            runner.register_hook(
                EvalHook(
                    evaluate_fn, interval=int(eval_cfg.get("interval", 1)),
                    by_epoch=bool(eval_cfg.get("by_epoch", runner.by_epoch)), start=eval_cfg.get("start"),
                    save_best=eval_cfg.get("save_best"), rule=eval_cfg.get("rule"),
                    dynamic_intervals=eval_cfg.get("dynamic_intervals"),
                )
            )
        env = collect_env()
        header = {"env_info": json.dumps(env), "config": dump_config(cfg), "seed": seed, "exp_name": config_path.name}
        log_interval = int((cfg.get("log_config") or {}).get("interval", 50))
        runner.register_hook(LoggerHook(interval=log_interval, json_path=json_log, header=header))
        for hook, priority in custom:
            runner.register_hook(hook, priority)

        manifest = {
            "argv": list(argv) if argv is not None else None,
            "det_version": env["det"],
            "config_source": str(cfg_source),
            "config": cfg,
            "versions": env,
            "seed": seed,
            "deterministic": deterministic,
            "device": str(dev),
            "torch_threads": threads,
            "world_size": world_size,
            "datasets": {split: _fingerprint(ds) for split, ds in datasets.items()},
            "resume_from": str(resume_path) if resume_path else None,
            "load_from": str(load_from) if load_from else None,
            "skipped_weights": skipped,
            "weights_loaded": [r.to_dict() for r in load_reports],
            "timestamp": timestamp,
            "start_time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "end_time": None,
            "status": "running",
        }
        work_dir.mkdir(parents=True, exist_ok=True)
        if text_log is not None:
            handler = logging.FileHandler(text_log)
            handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT))
            handler.setLevel(logging.INFO)
            setup_buffer.setTarget(handler)
            setup_buffer.flush()
            package_logger.addHandler(handler)
        package_logger.removeHandler(setup_buffer)
        if rank == 0:
            write_text_atomic(dump_config(cfg), config_path)
            write_json_atomic(manifest, manifest_path, indent=2)
        logger.info(
            "training %s on %s: %d images, %d iterations per epoch, %s, seed %d, %d torch threads",
            config_path.stem, dev, len(train_set), iters_per_epoch,
            f"{max_epochs} epochs" if max_epochs else f"{max_iters} iterations", seed, threads,
        )
        try:
            with stop_on_signals(runner):
                runner.run()
        except TrainingInterrupted as e:
            manifest["status"] = f"interrupted: {e}"
            raise
        except BaseException as e:
            manifest["status"] = f"failed: {type(e).__name__}: {e}"
            raise
        else:
            manifest["status"] = "finished"
        finally:
            if manifest and rank == 0:
                manifest["end_time"] = time.strftime("%Y-%m-%d %H:%M:%S")
                manifest["epochs"] = runner.epoch
                manifest["iters"] = runner.iter
                manifest["metrics"] = runner.last_metrics
                write_json_atomic(manifest, manifest_path, indent=2)
        best = (runner.meta.get("best") or {}).get("path")
        return TrainResult(
            work_dir=work_dir,
            last_checkpoint=runner.saved_checkpoints[-1] if runner.saved_checkpoints else None,
            best_checkpoint=work_dir / best if best else None,
            metrics=dict(runner.last_metrics),
            epochs=runner.epoch,
            iters=runner.iter,
            json_log=json_log,
            text_log=text_log,
            manifest=manifest_path,
            config_path=config_path,
            seed=seed,
            skipped_weights=skipped,
            weights_loaded=[r.to_dict() for r in load_reports],
            resumed_from=resume_path,
            rank=rank,
            world_size=world_size,
        )
    finally:
        package_logger.removeHandler(setup_buffer)
        setup_buffer.close()
        if handler is not None:
            package_logger.removeHandler(handler)
            handler.close()
        package_logger.setLevel(old_level)
        if locked:
            _unlock_work_dir(work_dir, created)
