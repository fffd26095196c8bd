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

The config is validated once into typed settings (:mod:`detcli.engine.settings`); besides the
optimizer, schedule and hooks these carry ``fp16`` / ``--amp`` (mixed precision on CUDA,
:mod:`detcli.engine.amp`; the loss scaler is checkpointed), ``optimizer_config.type:
GradientCumulativeOptimizerHook`` (``cumulative_iters``: gradient accumulation) and ``workflow:
[[train, N], [val, M]]`` (the validation loss on ``data.val`` with the training pipeline, logged as
``mode: val``), all run by :class:`~detcli.engine.runner.Runner`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import logging.handlers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from detcli.config import dump_config
from detcli.engine import runlock
from detcli.engine.amp import MixedPrecision, build_mixed_precision
from detcli.engine.builders import build_model, build_split
from detcli.engine.checkpoint import load_checkpoint, load_state_dict
from detcli.engine.dist import distributed, get_dist_info, run_on_main
from detcli.engine.environment import collect_env, configure_threads, resolve_device, set_random_seed
from detcli.engine.evaluation import resolve_evaluation
from detcli.engine.hooks import (
    CheckInvalidLossHook,
    CheckpointHook,
    EvalHook,
    LoggerHook,
    LrUpdaterHook,
    MomentumUpdaterHook,
    NumClassCheckHook,
    build_custom_hooks,
    check_num_classes,
)
from detcli.engine.loggers import build_logger_hooks
from detcli.engine.lr import LrSchedule, MomentumSchedule
from detcli.engine.optim import auto_scale_lr as scale_lr_in_cfg
from detcli.engine.optim import build_optimizer
from detcli.engine.progress import ProgressCallback
from detcli.engine.runner import Runner, TrainingInterrupted, stop_on_signals
from detcli.engine.settings import DistSettings, Fp16Settings, RunSettings
from detcli.engine.tester import check_mask_metrics, evaluate_detections, run_inference
from detcli.engine.validate import validate_config
from detcli.engine.zoo import resolve_checkpoint, split_zoo_spec
from detcli.errors import CheckpointError, ConfigError, OutputError
from detcli.fileio import check_writable_dir, clean_temp_files, write_json_atomic, write_text_atomic
from detcli.models.pretrained import load_detector_weights

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


def _resolve_resume(resume: str | bool | None, work_dir: Path, new_dir: bool = False) -> Path | None:
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


def _wrap_distributed(model: torch.nn.Module, settings: DistSettings, dev: torch.device, *, seed: int,
                      cfg_source: str) -> torch.nn.Module:
    """Move ``model`` to ``dev``; under a process group wrap it in DistributedDataParallel.

    Returns what training forwards through (``model`` itself with one process).
    """
    rank, world_size = get_dist_info()
    if world_size > 1 and settings.sync_bn:
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
        find_unused_parameters=settings.find_unused_parameters,
    )  # broadcasts rank 0's parameters and buffers: every replica starts from the same weights
    set_random_seed(seed + rank)  # per-rank streams from here on (dropout, custom random transforms)
    return ddp


def _fingerprint(dataset: Any) -> dict[str, Any]:
    fp = getattr(dataset, "fingerprint", None)
    if callable(fp):
        return dict(fp())
    return {"num_images": len(dataset)}


@dataclass(frozen=True)
class TrainOptions:
    """The command-line side of a run (what :func:`train` takes besides the config); see :func:`_train`."""

    work_dir: Path
    cfg_source: str
    resume: str | bool | None = None
    load_from: str | None = None
    device: str = "cpu"
    seed: int | None = None
    deterministic: bool = False
    validate: bool = True
    auto_scale_lr: bool = False
    argv: Sequence[str] | None = None
    progress: ProgressCallback | None = None
    sync_bn: bool = False
    allow_partial: bool = False
    amp: bool = False


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
        kwargs: the fields of :class:`TrainOptions` (``work_dir`` and ``cfg_source`` are required).
    """
    resolved = copy.deepcopy(dict(cfg))
    settings = validate_config(resolved, str(kwargs.get("cfg_source", "<config>")))  # once per run
    with distributed(launcher, device, backend=settings.dist.backend) as rank_device:
        return _train(resolved, settings, TrainOptions(device=rank_device, sync_bn=sync_bn, **kwargs))


def _train(cfg: dict[str, Any], settings: RunSettings, options: TrainOptions) -> TrainResult:
    """Train the detector described by ``cfg`` (validated into ``settings``) into ``options.work_dir``.

    Options (:class:`TrainOptions`):
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
        amp: mixed precision (``--amp``; also the ``fp16`` section): float16 autocast with a dynamic loss scale.

    The run is a few steps: :func:`_apply_options` (command line over config), :class:`_RunDir`
    (lock and logs), :func:`_build` (data, model, optimizer, schedule, runner), :func:`_resume_or_load`,
    :func:`_register_hooks`, :func:`_execute` (manifest, loop, result).

    Under a process group: the same seed on every rank builds the same initial weights (DDP also
    broadcasts rank 0's at wrap time), then each rank reseeds its own streams with ``seed + rank``;
    the data order and per-sample augmentation are functions of ``(seed, epoch, index)``, and rank
    ``r`` trains on entries ``r, r + W, ...`` of the epoch's permutation. Logged losses are means
    over ranks; ``--auto-scale-lr`` scales by ``samples_per_gpu * world_size``.

    Raises:
        ConfigError, DatasetError, CheckpointError, TrainingError (TrainingInterrupted on SIGTERM/SIGINT),
        OutputError (work dir not writable, in use by another run, disk full), DetError (device).
    """
    settings = _apply_options(cfg, settings, options)
    dev = resolve_device(options.device)
    if settings.device is not None and torch.device(settings.device).type != dev.type:
        raise ConfigError(f"{options.cfg_source}: device: the config says {settings.device} but the run is on {dev} "
                          f"(--device); pass --device {settings.device} or drop the key (--cfg-options device=null)")
    set_random_seed(settings.seed or 0, settings.deterministic)
    if settings.optim.optimizer is None:
        raise ConfigError(f"{options.cfg_source}: optimizer: the config has no optimizer section "
                          "(e.g. {type: SGD, lr: 0.01, momentum: 0.9})")
    with _RunDir(Path(options.work_dir), options.cfg_source, settings.log.log_level) as run_dir:
        _, world_size = get_dist_info()
        train_batch = settings.data.split("train").samples_per_gpu
        scale_lr_in_cfg(cfg, flag=settings.auto_scale_lr.enable, world_size=world_size, samples_per_gpu=train_batch)
        settings = settings.replace(optim=replace(settings.optim, optimizer=dict(cfg["optimizer"])))
        resume_path = _resolve_resume(options.resume or settings.resume_from, run_dir.path, new_dir=run_dir.created)
        built = _build(cfg, settings, options, dev, run_dir, resume=resume_path is not None)
        skipped = _resume_or_load(built, settings, options, resume_path)
        _register_hooks(built, cfg, settings, run_dir, dev)
        return _execute(built, cfg, settings, options, run_dir, resume_path, skipped)


def _apply_options(cfg: dict[str, Any], settings: RunSettings, options: TrainOptions) -> RunSettings:
    """Fold the command line into the settings (and into ``cfg``, which checkpoints and the run dir keep)."""
    seed = int(options.seed if options.seed is not None else (settings.seed if settings.seed is not None else 0))
    cfg["seed"] = seed
    optim = settings.optim
    if options.amp and optim.fp16 is None:
        optim = replace(optim, fp16=Fp16Settings("dynamic"))
        cfg["fp16"] = {"loss_scale": "dynamic"}
    return settings.replace(
        seed=seed,
        deterministic=bool(options.deterministic or settings.deterministic),
        auto_scale_lr=replace(settings.auto_scale_lr, enable=settings.auto_scale_lr.enable or options.auto_scale_lr),
        dist=replace(settings.dist, sync_bn=settings.dist.sync_bn or options.sync_bn),
        load_from=options.load_from or settings.load_from,
        optim=optim,
    )


class _RunDir:
    """The run directory while a run writes to it: lock (rank 0), log files and set-up log buffering.

    Set-up messages wait in memory: nothing is written to the work dir until every component was
    built (:meth:`start_logs`); leaving releases the lock and removes a directory this run created
    and left empty.
    """

    def __init__(self, path: Path, cfg_source: str, log_level: str | None) -> None:
        self.path = path
        self.rank = get_dist_info()[0]
        self.timestamp = time.strftime("%Y%m%d_%H%M%S")
        self.text_log = path / f"{self.timestamp}.log" if self.rank == 0 else None
        self.json_log = path / f"{self.timestamp}.log.json" if self.rank == 0 else None
        self.manifest_path = path / "manifest.json"
        self.config_path = path / f"{Path(cfg_source).stem}.yaml"
        self.explicit_level = log_level is not None
        self.level = getattr(logging, log_level) if log_level is not None else logging.INFO
        self.env: dict[str, Any] = {}  # collect_env() once the hooks are built
        self.created = False
        self._locked = False
        self._handler: logging.Handler | None = None
        self._package = logging.getLogger("detcli")
        self._old_level = self._package.level
        self._buffer = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)

    def __enter__(self) -> "_RunDir":
        # log_level sets this run's level (console and text log); without it the text log gets INFO
        if self.rank == 0 and (self.explicit_level or self._package.getEffectiveLevel() > self.level):
            self._package.setLevel(self.level)
        self._buffer.setLevel(self.level)
        self._package.addHandler(self._buffer)
        try:
            if self.rank == 0:  # one det run per work dir; fails before any work when it is not writable
                self.created = _lock_work_dir(self.path)
                self._locked = True
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_logs(self) -> None:
        """Open the text log (flushing the set-up messages into it); from here on files are written."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.text_log is not None:
            self._handler = logging.FileHandler(self.text_log)
            self._handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT))
            self._handler.setLevel(self.level)
            self._buffer.setTarget(self._handler)
            self._buffer.flush()
            self._package.addHandler(self._handler)
        self._package.removeHandler(self._buffer)

    def __exit__(self, *exc: Any) -> None:
        self._package.removeHandler(self._buffer)
        self._buffer.close()
        if self._handler is not None:
            self._package.removeHandler(self._handler)
            self._handler.close()
        self._package.setLevel(self._old_level)
        if self._locked:
            _unlock_work_dir(self.path, self.created)


@dataclass
class _Built:
    """What :func:`_build` made for one run."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    runner: Runner
    schedule: LrSchedule
    lr_hook: LrUpdaterHook
    momentum_hook: MomentumUpdaterHook | None
    datasets: dict[str, Any]
    val_set: Any
    threads: int
    amp: MixedPrecision | None
    load_reports: list[Any] = field(default_factory=list)


def _build(cfg: dict[str, Any], settings: RunSettings, options: TrainOptions, dev: torch.device, run_dir: _RunDir,
           *, resume: bool) -> _Built:
    """Datasets, model (initialised unless resuming), optimizer, lr schedule, loaders and the runner."""
    rank, world_size = get_dist_info()
    train_cfg = settings.data.split("train")
    threads = configure_threads(train_cfg.workers_per_gpu)
    train_set, _, _ = build_split(cfg, "train", test_mode=False)
    val_set = None
    if options.validate and settings.data.val is not None:
        val_set, _, _ = build_split(cfg, "val", test_mode=True)
    loss_set = _val_loss_dataset(cfg, settings) if settings.schedule.val_phases else None
    datasets = {"train": train_set} | ({"val": val_set} if val_set is not None else {})
    model: Any = build_model(cfg)
    check_num_classes(model, datasets | ({"val (workflow)": loss_set} if loss_set is not None else {}))
    load_reports = [] if resume else list(model.init_weights(allow_partial=options.allow_partial) or [])
    train_module = _wrap_distributed(model, settings.dist, dev, seed=settings.seed or 0, cfg_source=options.cfg_source)
    amp = build_mixed_precision(settings.optim.fp16, dev)
    optimizer = build_optimizer(model, settings.optim.optimizer or {})
    sched = settings.schedule
    schedule = LrSchedule.from_config(sched.lr_config, max_epochs=sched.max_epochs, max_iters=sched.max_iters)
    lr_hook = LrUpdaterHook(schedule, optimizer)  # records each group's initial_lr before any resume
    momentum_schedule = MomentumSchedule.from_config(sched.momentum_config, max_epochs=sched.max_epochs,
                                                     max_iters=sched.max_iters)
    momentum_hook = MomentumUpdaterHook(momentum_schedule, optimizer) if momentum_schedule else None
    seed = settings.seed or 0
    train_loader = _loader(train_set, train_cfg.samples_per_gpu, train_cfg.workers_per_gpu, shuffle=train_cfg.shuffle,
                           persistent=train_cfg.persistent_workers, seed=seed,
                           group=settings.data.group_by_aspect_ratio)
    val_loader = None
    if loss_set is not None:  # the training loader's batch and workers, as mmdet's workflow loaders
        val_loader = _loader(loss_set, train_cfg.samples_per_gpu, train_cfg.workers_per_gpu, shuffle=False,
                             persistent=False, seed=seed, group=False)
    runner = Runner(
        model, optimizer, train_loader, len(train_loader.loader), run_dir.path,
        runner_type=sched.runner_type, max_epochs=sched.max_epochs, max_iters=sched.max_iters,
        grad_clip=settings.optim.grad_clip, device=dev, config=cfg, classes=tuple(train_set.classes),
        progress=options.progress if rank == 0 else None, train_module=train_module,
        cumulative_iters=settings.optim.cumulative_iters, amp=amp, val_loader=val_loader,
        workflow=sched.workflow,
    )
    runner.datasets = datasets
    runner.meta["scheduler"] = schedule.state_dict()
    runner.meta["seed"] = seed
    return _Built(model, optimizer, runner, schedule, lr_hook, momentum_hook, datasets, val_set, threads, amp,
                  load_reports)


class _EpochLoader:
    """``epoch -> loader``: the data order and augmentations are functions of (seed, epoch)."""

    def __init__(self, loader: Any, dataset: Any) -> None:
        self.loader = loader
        self.dataset = dataset

    def __call__(self, epoch: int) -> Any:
        sampler: Any = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.loader


def _loader(dataset: Any, samples: int, workers: int, *, shuffle: bool, persistent: bool, seed: int,
            group: bool) -> _EpochLoader:
    from detcli.data import aspect_ratio_flags, build_dataloader

    rank, world_size = get_dist_info()
    # data.group_by_aspect_ratio: every (global) batch holds only landscape or only portrait images
    flags = aspect_ratio_flags(dataset) if group else None
    loader = build_dataloader(dataset, samples, workers, shuffle=shuffle, seed=seed, epoch=0,
                              num_replicas=world_size, rank=rank, persistent_workers=persistent, group_flags=flags)
    return _EpochLoader(loader, dataset)


def _val_loss_dataset(cfg: Mapping[str, Any], settings: RunSettings) -> Any:
    """``data.val`` with the training pipeline and its annotations, for the workflow's val phases (as mmdet's
    ``tools/train.py`` builds it)."""
    if settings.data.val is None:
        raise ConfigError("workflow: a val phase computes the validation loss on data.val, which the config lacks")
    val = dict(settings.data.val.dataset)
    train_node = settings.data.split("train").dataset
    pipeline = train_node.get("pipeline")
    if pipeline is None and isinstance(train_node.get("dataset"), Mapping):  # a wrapper (RepeatDataset, ...)
        pipeline = train_node["dataset"].get("pipeline")
    if pipeline is not None and "pipeline" in val:
        val["pipeline"] = copy.deepcopy(pipeline)
    data = {"train": val}
    dataset, _, _ = build_split({"data": data}, "train", test_mode=False)
    return dataset


def _resume_or_load(built: _Built, settings: RunSettings, options: TrainOptions, resume_path: Path | None) -> list[str]:
    """Restore a checkpoint to resume (weights, optimizer, loss scale, position, RNG), or load ``load_from`` weights.

    Returns:
        The names of the ``load_from`` weights skipped for a shape mismatch.
    """
    runner, model = built.runner, built.model
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        load_state_dict(model, ckpt["state_dict"], resume_path)
        if ckpt.get("optimizer") is None:
            raise CheckpointError(
                f"{resume_path}: saved without the optimizer state (checkpoint_config.save_optimizer: false), "
                "so it cannot be resumed exactly; use --load-from to start from its weights"
            )
        try:
            built.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{resume_path}: the optimizer state does not fit this config's optimizer: {e}") from e
        meta = ckpt["meta"]
        if built.amp is not None:
            built.amp.load_state_dict(meta.get("fp16"))
        runner.resumed_hook_states = dict(ckpt.get("hooks") or {})
        runner.resume_state(
            meta["epoch"], meta["iter"], {"best": meta.get("best")} if meta.get("best") else None, rng_state=ckpt["rng"]
        )
        logger.info("resumed from %s at epoch %d, iteration %d", resume_path, meta["epoch"], meta["iter"])
        return []
    if not settings.load_from:
        return []
    spec, zoo_cfg = split_zoo_spec(str(settings.load_from), None)
    report = load_detector_weights(model, str(resolve_checkpoint(spec, zoo_cfg)), allow_partial=options.allow_partial,
                                   what="model (load_from)")
    built.load_reports.append(report)
    return [m.split(":", 1)[0] for m in report.mismatched]


def _register_hooks(built: _Built, cfg: dict[str, Any], settings: RunSettings, run_dir: _RunDir,
                    dev: torch.device) -> None:
    """The built-in hooks (lr, NaN check, class check, checkpoints, evaluation, logger) and ``custom_hooks``."""
    runner = built.runner
    runner.register_hook(built.lr_hook)
    if built.momentum_hook is not None:
        runner.register_hook(built.momentum_hook)
    runner.register_hook(CheckInvalidLossHook(interval=1))
    custom = build_custom_hooks(list(settings.custom_hooks) or None)
    if not any(isinstance(h, NumClassCheckHook) for h, _ in custom):
        runner.register_hook(NumClassCheckHook())
    ckpt = settings.checkpoint
    runner.register_hook(CheckpointHook(
        interval=ckpt.interval, by_epoch=runner.by_epoch if ckpt.by_epoch is None else ckpt.by_epoch,
        save_optimizer=ckpt.save_optimizer, max_keep_ckpts=ckpt.max_keep_ckpts, save_last=ckpt.save_last,
    ))
    if built.val_set is not None:
        runner.register_hook(_eval_hook(built, cfg, settings, dev))
    env = collect_env()
    run_dir.env = env
    header = {"env_info": json.dumps(env), "config": dump_config(cfg), "seed": settings.seed,
              "exp_name": run_dir.config_path.name}
    log_interval, logger_hooks = build_logger_hooks({"interval": settings.log.interval, "hooks": list(settings.log.hooks)})
    runner.register_hook(LoggerHook(interval=log_interval, json_path=run_dir.json_log, header=header))
    for logger_hook in logger_hooks:  # TensorboardLoggerHook, plugin loggers
        runner.register_hook(logger_hook)
    for hook, priority in custom:
        runner.register_hook(hook, priority)


def _eval_hook(built: _Built, cfg: dict[str, Any], settings: RunSettings, dev: torch.device) -> EvalHook:
    runner, val_set, model = built.runner, built.val_set, built.model
    ev = settings.evaluation
    val_loader = settings.data.split("val")
    metric_names, eval_options = resolve_evaluation(val_set, None, ev.options)
    check_mask_metrics(model, metric_names)

    def evaluate_fn(model_: torch.nn.Module, progress_: ProgressCallback | None) -> Any:
        dets = run_inference(
            model_, val_set, samples_per_gpu=val_loader.samples_per_gpu, workers_per_gpu=val_loader.workers_per_gpu,
            device=dev, cfg=cfg, progress=progress_, phase="val", epoch=runner.epoch, encode_masks=True,
        )
        return run_on_main(lambda: evaluate_detections(  # once, on rank 0; result broadcast
            val_set, dets, metric_names, eval_options
        ))

    return EvalHook(
        evaluate_fn, interval=ev.interval, by_epoch=runner.by_epoch if ev.by_epoch is None else ev.by_epoch,
        start=ev.start, save_best=ev.save_best, rule=ev.rule,
        dynamic_intervals=[list(p) for p in ev.dynamic_intervals] if ev.dynamic_intervals else None,
    )


def _manifest(built: _Built, cfg: dict[str, Any], settings: RunSettings, options: TrainOptions, run_dir: _RunDir,
              resume_path: Path | None, skipped: list[str]) -> dict[str, Any]:
    """``manifest.json`` at the start of the run (status ``running``)."""
    env = run_dir.env or collect_env()
    return {
        "argv": list(options.argv) if options.argv is not None else None,
        "det_version": env["det"],
        "config_source": str(options.cfg_source),
        "config": cfg,
        "versions": env,
        "seed": settings.seed,
        "deterministic": settings.deterministic,
        "device": str(built.runner.device),
        "torch_threads": built.threads,
        "world_size": get_dist_info()[1],
        "datasets": {split: _fingerprint(ds) for split, ds in built.datasets.items()},
        "resume_from": str(resume_path) if resume_path else None,
        "load_from": str(settings.load_from) if settings.load_from else None,
        "skipped_weights": skipped,
        "weights_loaded": [r.to_dict() for r in built.load_reports],
        "timestamp": run_dir.timestamp,
        "start_time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "end_time": None,
        "status": "running",
    }


def _execute(built: _Built, cfg: dict[str, Any], settings: RunSettings, options: TrainOptions, run_dir: _RunDir,
             resume_path: Path | None, skipped: list[str]) -> TrainResult:
    """Write the resolved config and manifest, run the loop, and record how it ended."""
    runner = built.runner
    rank, world_size = get_dist_info()
    sched = settings.schedule
    manifest = _manifest(built, cfg, settings, options, run_dir, resume_path, skipped)
    run_dir.start_logs()
    if rank == 0:
        write_text_atomic(dump_config(cfg), run_dir.config_path)
        write_json_atomic(manifest, run_dir.manifest_path, indent=2)
    logger.info(
        "training %s on %s: %d images, %d iterations per epoch, %s, seed %d, %d torch threads",
        run_dir.config_path.stem, runner.device, len(built.datasets["train"]), runner.iters_per_epoch,
        f"{sched.max_epochs} epochs" if sched.max_epochs else f"{sched.max_iters} iterations", settings.seed,
        built.threads,
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
        if rank == 0:
            manifest["end_time"] = time.strftime("%Y-%m-%d %H:%M:%S")
            manifest["epochs"] = runner.epoch
            manifest["iters"] = runner.iter
            manifest["metrics"] = runner.last_metrics
            write_json_atomic(manifest, run_dir.manifest_path, indent=2)
    best = (runner.meta.get("best") or {}).get("path")
    return TrainResult(
        work_dir=run_dir.path,
        last_checkpoint=runner.saved_checkpoints[-1] if runner.saved_checkpoints else None,
        best_checkpoint=run_dir.path / best if best else None,
        metrics=dict(runner.last_metrics),
        epochs=runner.epoch,
        iters=runner.iter,
        json_log=run_dir.json_log,
        text_log=run_dir.text_log,
        manifest=run_dir.manifest_path,
        config_path=run_dir.config_path,
        seed=int(settings.seed or 0),
        skipped_weights=skipped,
        weights_loaded=[r.to_dict() for r in built.load_reports],
        resumed_from=resume_path,
        rank=rank,
        world_size=world_size,
    )
