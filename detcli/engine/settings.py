"""Typed run settings: the runtime sections of a resolved config, parsed and checked once.

:func:`parse_settings` turns the dict of :func:`detcli.config.load_config` into a frozen
:class:`RunSettings` (data per split, optimisation, schedule, evaluation, checkpointing, logging,
distribution, seed, weights to start from). Every value is checked by type here, with an error
naming the key and an example of a valid value; the engine then reads fields, not dicts.
Component nodes (``model``, datasets, ``optimizer``, hooks) stay mappings: their registries and
constructors check them when they are built (``det config check`` builds them in a dry run).

Data loaders (mmdet >= 2.24 rules, :func:`loader_settings`):

=====================  ================================================================  =========
split                  ``samples_per_gpu``, first that is set                            default
=====================  ================================================================  =========
train                  ``data.train_dataloader``, ``data.train``, ``data``               1
val                    ``data.val_dataloader``, ``data.val``                             1
test                   ``data.test_dataloader``, ``data.test`` (a list: the largest)     1
=====================  ================================================================  =========

``data.samples_per_gpu`` is the *training* batch only (as in mmdet, where validation and testing
run one image per GPU unless ``val_dataloader``/``test_dataloader`` say otherwise).
``workers_per_gpu`` is looked up the same way for every split, ending at ``data.workers_per_gpu``
(default 0: the main process loads); ``persistent_workers`` at ``*_dataloader`` then ``data``
(default true, with workers only). ``--auto-scale-lr`` scales with the resolved training batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from detcli.config import is_int
from detcli.errors import ConfigError, did_you_mean

#: ``runner.type`` values (mmcv's two runners).
RUNNER_TYPES = ("EpochBasedRunner", "IterBasedRunner")
#: ``optimizer_config.type`` values det runs.
OPTIMIZER_HOOKS = ("OptimizerHook", "GradientCumulativeOptimizerHook", "Fp16OptimizerHook",
                   "GradientCumulativeFp16OptimizerHook")
#: keys of ``data.<split>_dataloader`` det honours.
DATALOADER_KEYS = ("samples_per_gpu", "workers_per_gpu", "persistent_workers", "shuffle")
#: keys of a ``data.<split>`` dataset node that configure the loader, not the dataset.
SPLIT_LOADER_KEYS = ("samples_per_gpu", "workers_per_gpu")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")
WORKFLOW_MODES = ("train", "val")
FP16_KEYS = ("loss_scale", "dtype")
FP16_DTYPES = ("float16", "bfloat16")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value: Any, key: str, *, minimum: int, example: int) -> int:
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key}: expected {what} (e.g. {key.rsplit('.', 1)[-1]}: {example}), "
                          f"got {_show(value)} (a {type(value).__name__})")
    return int(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {_show(value)} (a {type(value).__name__})")
    return value


def _mapping(value: Any, key: str, example: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping (e.g. {key.rsplit('.', 1)[-1]}: {example}), got {_show(value)}")
    return dict(value)


def _unknown_keys(node: Mapping[str, Any], allowed: Sequence[str], key: str) -> None:
    for k in node:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: det does not support this key{did_you_mean(str(k), allowed)} "
                              f"(supported: {', '.join(allowed)})")


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class LoaderSettings:
    """One split's dataset node and loader.

    Attributes:
        dataset: the dataset node without loader keys (a list of nodes became a ``ConcatDataset``).
        samples_per_gpu: images per batch on each process.
        workers_per_gpu: DataLoader worker processes (0: the main process loads).
        persistent_workers: keep workers between epochs (only with workers).
        shuffle: random order (training).
    """

    dataset: dict[str, Any]
    samples_per_gpu: int
    workers_per_gpu: int
    persistent_workers: bool = True
    shuffle: bool = False


def split_dataset_node(data: Mapping[str, Any], split: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(dataset node, [loader keys found in it or its list items])`` of ``data.<split>``."""
    node = data.get(split)
    items = list(node) if isinstance(node, (list, tuple)) else None
    if items is not None and items:
        if not all(isinstance(x, Mapping) for x in items):
            raise ConfigError(f"data.{split}: expected a dataset node or a list of them, got {_show(node)}")
        popped = []
        datasets = []
        for item in items:
            item = dict(item)
            popped.append({k: item.pop(k) for k in SPLIT_LOADER_KEYS if k in item})
            datasets.append(item)
        return {"type": "ConcatDataset", "datasets": datasets}, popped
    if not isinstance(node, Mapping):
        raise ConfigError(f"data.{split}: the config defines no {split} dataset")
    node = dict(node)
    return node, [{k: node.pop(k) for k in SPLIT_LOADER_KEYS if k in node}]


def loader_settings(cfg: Mapping[str, Any], split: str) -> LoaderSettings:
    """The dataset node and loader of ``data.<split>`` by the precedence in the module docstring.

    Raises:
        ConfigError: no such split, a value of the wrong type, an unsupported ``*_dataloader`` key.
    """
    data = _mapping(cfg.get("data"), "data", "{samples_per_gpu: 2, train: {...}}")
    node, split_keys = split_dataset_node(data, split)
    return _loader(data, split, node, split_keys)


def train_batch_size(cfg: Mapping[str, Any]) -> int:
    """``samples_per_gpu`` of the training loader (:func:`loader_settings`' rule; also without a train dataset)."""
    data = _mapping(cfg.get("data"), "data", "{samples_per_gpu: 2, train: {...}}")
    if data.get("train"):
        return loader_settings(cfg, "train").samples_per_gpu
    return _loader(data, "train", {}, []).samples_per_gpu


def _loader(data: dict[str, Any], split: str, node: dict[str, Any], split_keys: list[dict[str, Any]]) -> LoaderSettings:
    loader_key = f"data.{split}_dataloader"
    loader = _mapping(data.get(f"{split}_dataloader"), loader_key, "{samples_per_gpu: 2}")
    _unknown_keys(loader, DATALOADER_KEYS, loader_key)

    def pick(name: str, minimum: int, example: int, top: bool) -> int | None:
        if name in loader:
            return _int(loader[name], f"{loader_key}.{name}", minimum=minimum, example=example)
        found = [_int(k[name], f"data.{split}.{name}", minimum=minimum, example=example) for k in split_keys if name in k]
        if found:
            return max(found)  # mmdet: a list of test datasets runs with the largest batch asked
        if top and name in data:
            return _int(data[name], f"data.{name}", minimum=minimum, example=example)
        return None

    samples = pick("samples_per_gpu", 1, 2, top=split == "train") or 1
    workers = pick("workers_per_gpu", 0, 2, top=True) or 0
    persistent = True
    if "persistent_workers" in loader:
        persistent = _bool(loader["persistent_workers"], f"{loader_key}.persistent_workers")
    elif "persistent_workers" in data:
        persistent = _bool(data["persistent_workers"], "data.persistent_workers")
    shuffle = split == "train"
    if "shuffle" in loader:
        shuffle = _bool(loader["shuffle"], f"{loader_key}.shuffle")
    return LoaderSettings(node, samples, workers, persistent and workers > 0, shuffle)


@dataclass(frozen=True)
class DataSettings:
    """``data``: the loader of each split present, and batch grouping."""

    train: LoaderSettings | None
    val: LoaderSettings | None
    test: LoaderSettings | None
    group_by_aspect_ratio: bool = False

    def split(self, name: str) -> LoaderSettings:
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"data.{name}: the config defines no {name} dataset")
        return value


def _data(cfg: Mapping[str, Any]) -> DataSettings:
    data = _mapping(cfg.get("data"), "data", "{samples_per_gpu: 2, train: {...}}")
    splits = {s: loader_settings(cfg, s) if data.get(s) else None for s in ("train", "val", "test")}
    for s in ("train", "val", "test"):
        if f"{s}_dataloader" in data and not data.get(s):
            raise ConfigError(f"data.{s}_dataloader: there is no data.{s} dataset for it to load")
    group = _bool(data.get("group_by_aspect_ratio", False), "data.group_by_aspect_ratio")
    return DataSettings(splits["train"], splits["val"], splits["test"], group)


# --------------------------------------------------------------------------- optimisation

@dataclass(frozen=True)
class Fp16Settings:
    """``fp16`` / ``--amp``: mixed precision (autocast) with a gradient scaler.

    Attributes:
        loss_scale: ``"dynamic"``, a fixed scale, or the keyword arguments of ``torch.amp.GradScaler``;
            default 512.0 (mmcv's ``Fp16OptimizerHook``), ``--amp`` uses ``"dynamic"``.
        dtype: ``float16`` (with the scaler) or ``bfloat16`` (no scaler needed).
    """

    loss_scale: str | float | dict[str, Any] = 512.0
    dtype: str = "float16"


def _fp16(value: Any) -> Fp16Settings | None:
    if value is None:
        return None
    node = _mapping(value, "fp16", "{loss_scale: dynamic}")
    _unknown_keys(node, FP16_KEYS, "fp16")
    scale = node.get("loss_scale", 512.0)
    if isinstance(scale, Mapping):
        allowed = ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled")
        _unknown_keys(scale, allowed, "fp16.loss_scale")
        scale = dict(scale)
    elif scale != "dynamic":
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"fp16.loss_scale: expected 'dynamic', a positive number (a fixed scale, e.g. 512.0) "
                              f"or GradScaler arguments ({{init_scale: 65536}}), got {_show(scale)}")
        scale = float(scale)
    dtype = node.get("dtype", "float16")
    if dtype not in FP16_DTYPES:
        raise ConfigError(f"fp16.dtype: expected one of {', '.join(FP16_DTYPES)}, got {_show(dtype)}")
    return Fp16Settings(scale, dtype)


@dataclass(frozen=True)
class OptimSettings:
    """``optimizer`` and ``optimizer_config``.

    Attributes:
        optimizer: the ``optimizer`` node (``{type: SGD, lr: ...}``), built by :func:`~detcli.engine.optim.build_optimizer`.
        grad_clip: keyword arguments of ``clip_grad_norm_``, or None.
        cumulative_iters: accumulate gradients over this many iterations per optimizer step
            (``GradientCumulativeOptimizerHook``); 1: step every iteration.
        fp16: mixed precision, or None.
    """

    optimizer: dict[str, Any] | None
    grad_clip: dict[str, Any] | None = None
    cumulative_iters: int = 1
    fp16: Fp16Settings | None = None


def _optim(cfg: Mapping[str, Any]) -> OptimSettings:
    node = _mapping(cfg.get("optimizer_config"), "optimizer_config", "{grad_clip: {max_norm: 35}}")
    kind = node.get("type", "OptimizerHook")
    if kind not in OPTIMIZER_HOOKS:
        raise ConfigError(f"optimizer_config.type: det does not run '{kind}'{did_you_mean(str(kind), OPTIMIZER_HOOKS)} "
                          f"(supported: {', '.join(OPTIMIZER_HOOKS)})")
    cumulative = node.get("cumulative_iters")
    if "Cumulative" in kind:
        cumulative = _int(1 if cumulative is None else cumulative, "optimizer_config.cumulative_iters",
                          minimum=1, example=4)
    elif cumulative is not None:
        raise ConfigError("optimizer_config.cumulative_iters: only GradientCumulativeOptimizerHook accumulates "
                          "gradients; add optimizer_config.type: GradientCumulativeOptimizerHook")
    grad_clip = node.get("grad_clip")
    if grad_clip is not None:
        grad_clip = _mapping(grad_clip, "optimizer_config.grad_clip", "{max_norm: 35, norm_type: 2}")
    fp16 = _fp16(cfg.get("fp16"))
    if "Fp16" in kind:  # mmcv's hooks: `loss_scale` etc. given on the hook instead of in `fp16`
        extra = {k: node[k] for k in FP16_KEYS if k in node}
        fp16 = _fp16({**({"loss_scale": fp16.loss_scale, "dtype": fp16.dtype} if fp16 else {}), **extra})
    allowed = {"type", "grad_clip", "cumulative_iters"} | (set(FP16_KEYS) if "Fp16" in kind else set())
    _unknown_keys(node, sorted(allowed), "optimizer_config")
    optimizer = cfg.get("optimizer")
    if optimizer is not None:
        optimizer = _mapping(optimizer, "optimizer", "{type: SGD, lr: 0.02}")
    return OptimSettings(optimizer, grad_clip, int(cumulative or 1), fp16)


# --------------------------------------------------------------------------- schedule

def runner_settings(cfg: Mapping[str, Any]) -> tuple[str, int | None, int | None]:
    """Return ``(type, max_epochs, max_iters)`` of the ``runner`` section (default 12 epochs)."""
    runner = _mapping(cfg.get("runner"), "runner", "{type: EpochBasedRunner, max_epochs: 12}") or {
        "type": "EpochBasedRunner", "max_epochs": 12}
    kind = runner.get("type", "EpochBasedRunner")
    if kind not in RUNNER_TYPES:
        raise ConfigError(f"runner.type: unknown runner '{kind}'{did_you_mean(str(kind), RUNNER_TYPES)} "
                          f"(known: {', '.join(RUNNER_TYPES)})")
    key = "max_epochs" if kind == "EpochBasedRunner" else "max_iters"
    other = "max_iters" if key == "max_epochs" else "max_epochs"
    if other in runner:
        raise ConfigError(f"runner.{other}: a {kind} counts in {key.split('_')[1]}; set runner.{key} instead")
    value = runner.get(key)
    if value is None or not is_int(value) or value < 1:
        raise ConfigError(f"runner.{key}: a {kind} needs {key} as a positive integer, got {value!r}")
    return kind, (value if key == "max_epochs" else None), (value if key == "max_iters" else None)


@dataclass(frozen=True)
class ScheduleSettings:
    """``runner``, ``lr_config``, ``momentum_config`` and ``workflow``.

    Attributes:
        runner_type: ``EpochBasedRunner`` or ``IterBasedRunner``.
        max_epochs / max_iters: the run's length (one of them is None).
        lr_config: the ``lr_config`` node (None: a fixed lr).
        momentum_config: the ``momentum_config`` node (None: the optimizer's momentum throughout).
        workflow: ``((mode, count), ...)``: ``train`` phases, optionally alternating with ``val`` phases
            that compute the validation loss (epochs for an EpochBasedRunner, iterations otherwise).
    """

    runner_type: str = "EpochBasedRunner"
    max_epochs: int | None = 12
    max_iters: int | None = None
    lr_config: dict[str, Any] | None = None
    momentum_config: dict[str, Any] | None = None
    workflow: tuple[tuple[str, int], ...] = (("train", 1),)

    @property
    def by_epoch(self) -> bool:
        return self.runner_type == "EpochBasedRunner"

    @property
    def val_phases(self) -> bool:
        return any(mode == "val" for mode, _ in self.workflow)


def _workflow(value: Any) -> tuple[tuple[str, int], ...]:
    if value is None:
        return (("train", 1),)
    example = "[[train, 1], [val, 1]]"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"workflow: expected a list of [mode, count] pairs (e.g. workflow: {example}), got {_show(value)}")
    phases = []
    for i, entry in enumerate(value):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ConfigError(f"workflow.{i}: expected a [mode, count] pair (e.g. workflow: {example}), got {_show(entry)}")
        mode, count = entry
        if mode not in WORKFLOW_MODES:
            raise ConfigError(f"workflow.{i}: unknown mode {_show(mode)}{did_you_mean(str(mode), WORKFLOW_MODES)} "
                              f"(det runs: {', '.join(WORKFLOW_MODES)})")
        phases.append((mode, _int(count, f"workflow.{i}.1", minimum=1, example=1)))
    if [m for m, _ in phases] not in (["train"], ["train", "val"]):
        raise ConfigError(f"workflow: det runs [[train, N]] or [[train, N], [val, M]] (validation loss after every N "
                          f"training epochs, or iterations with an IterBasedRunner), got {_show(value)}")
    return tuple(phases)


def _schedule(cfg: Mapping[str, Any]) -> ScheduleSettings:
    kind, max_epochs, max_iters = runner_settings(cfg)
    lr_config = cfg.get("lr_config")
    if lr_config is not None:
        lr_config = _mapping(lr_config, "lr_config", "{policy: step, step: [8, 11]}")
    momentum = cfg.get("momentum_config")
    if momentum is not None:
        momentum = _mapping(momentum, "momentum_config", "{policy: cyclic, target_ratio: [0.85, 0.95]}")
    return ScheduleSettings(kind, max_epochs, max_iters, lr_config, momentum, _workflow(cfg.get("workflow")))


# --------------------------------------------------------------------------- evaluation, checkpoints, logs

#: ``evaluation`` keys that configure the hook; the rest are evaluation options (metric, iou_thrs, ...).
EVAL_HOOK_KEYS = ("interval", "by_epoch", "start", "save_best", "rule", "dynamic_intervals")


@dataclass(frozen=True)
class EvalSettings:
    """``evaluation``: when to evaluate during training and what (``options``: metric, classwise, ...)."""

    interval: int = 1
    by_epoch: bool | None = None
    start: int | None = None
    save_best: str | None = None
    rule: str | None = None
    dynamic_intervals: tuple[tuple[int, int], ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _evaluation(cfg: Mapping[str, Any]) -> EvalSettings:
    node = _mapping(cfg.get("evaluation"), "evaluation", "{interval: 1, metric: bbox}")
    interval = _int(node.get("interval", 1), "evaluation.interval", minimum=1, example=1)
    by_epoch = node.get("by_epoch")
    if by_epoch is not None:
        by_epoch = _bool(by_epoch, "evaluation.by_epoch")
    start = node.get("start")
    if start is not None:
        start = _int(start, "evaluation.start", minimum=0, example=0)
    save_best = node.get("save_best")
    if save_best is not None and not isinstance(save_best, str):
        raise ConfigError(f"evaluation.save_best: expected 'auto' or a metric name, got {_show(save_best)}")
    rule = node.get("rule")
    if rule is not None and rule not in ("greater", "less"):
        raise ConfigError(f"evaluation.rule: must be 'greater' or 'less', got {rule!r}")
    dyn = node.get("dynamic_intervals")
    if dyn and not (isinstance(dyn, (list, tuple)) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(is_int(x) and x >= 1 for x in p) for p in dyn)):
        raise ConfigError(f"evaluation.dynamic_intervals: expected [[milestone, interval], ...] of positive integers "
                          f"(e.g. dynamic_intervals: [[285, 1]]), got {_show(dyn)}")
    dynamic = tuple((int(a), int(b)) for a, b in dyn) if dyn else None
    options = {k: v for k, v in node.items() if k not in EVAL_HOOK_KEYS}
    return EvalSettings(int(interval), by_epoch, start, save_best, rule, dynamic, options)


@dataclass(frozen=True)
class CheckpointSettings:
    """``checkpoint_config`` (:class:`~detcli.engine.hooks.CheckpointHook`'s arguments; ``by_epoch`` None: the runner's)."""

    interval: int = 1
    by_epoch: bool | None = None
    save_optimizer: bool = True
    max_keep_ckpts: int = -1
    save_last: bool = True


def _checkpoint(cfg: Mapping[str, Any]) -> CheckpointSettings:
    node = _mapping(cfg.get("checkpoint_config"), "checkpoint_config", "{interval: 1}")
    fields_ = ("interval", "by_epoch", "save_optimizer", "max_keep_ckpts", "save_last")
    _unknown_keys(node, fields_, "checkpoint_config")
    interval = node.get("interval", 1)
    if not is_int(interval) or (interval < 1 and interval != -1):
        raise ConfigError(f"checkpoint_config.interval: expected a positive integer, or -1 (e.g. interval: 1), got {_show(interval)}")
    keep = node.get("max_keep_ckpts", -1)
    if not is_int(keep):
        raise ConfigError(f"checkpoint_config.max_keep_ckpts: expected an integer (e.g. max_keep_ckpts: 3), got {_show(keep)}")
    by_epoch = node.get("by_epoch")
    return CheckpointSettings(
        int(interval), None if by_epoch is None else _bool(by_epoch, "checkpoint_config.by_epoch"),
        _bool(node.get("save_optimizer", True), "checkpoint_config.save_optimizer"), int(keep),
        _bool(node.get("save_last", True), "checkpoint_config.save_last"),
    )


@dataclass(frozen=True)
class LogSettings:
    """``log_config`` and ``log_level``."""

    interval: int = 50
    hooks: tuple[dict[str, Any], ...] = ()
    log_level: str | None = None  # None: not set (INFO for the run's text log)


def _logging(cfg: Mapping[str, Any]) -> LogSettings:
    node = _mapping(cfg.get("log_config"), "log_config", "{interval: 50}")
    interval = _int(node.get("interval", 50), "log_config.interval", minimum=1, example=50)
    hooks = node.get("hooks") or []
    if not isinstance(hooks, (list, tuple)) or not all(isinstance(h, Mapping) for h in hooks):
        raise ConfigError(f"log_config.hooks: expected a list of {{type: ...}} nodes, got {_show(hooks)}")
    level = cfg.get("log_level")
    if level is not None and (not isinstance(level, str) or level.upper() not in LOG_LEVELS):
        raise ConfigError(f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {_show(level)}")
    return LogSettings(interval, tuple(dict(h) for h in hooks), level.upper() if level is not None else None)


@dataclass(frozen=True)
class DistSettings:
    """``dist_params``, ``sync_bn``, ``find_unused_parameters``."""

    backend: str | None = None
    sync_bn: bool = False
    find_unused_parameters: bool = False


def _dist(cfg: Mapping[str, Any]) -> DistSettings:
    node = _mapping(cfg.get("dist_params"), "dist_params", "{backend: nccl}")
    _unknown_keys(node, ("backend",), "dist_params")  # the port: MASTER_PORT (torchrun) or the launcher
    backend = node.get("backend")
    if backend is not None and backend not in ("nccl", "gloo"):
        raise ConfigError(f"dist_params.backend: expected nccl or gloo, got {_show(backend)}")
    return DistSettings(backend, _bool(cfg.get("sync_bn", False), "sync_bn"),
                        _bool(cfg.get("find_unused_parameters", False), "find_unused_parameters"))


@dataclass(frozen=True)
class AutoScaleLrSettings:
    """``auto_scale_lr`` (``enable`` is also ``--auto-scale-lr``)."""

    enable: bool = False
    base_batch_size: int = 16


def _auto_scale(cfg: Mapping[str, Any]) -> AutoScaleLrSettings:
    node = _mapping(cfg.get("auto_scale_lr"), "auto_scale_lr", "{enable: false, base_batch_size: 16}")
    return AutoScaleLrSettings(
        _bool(node.get("enable", False), "auto_scale_lr.enable"),
        _int(node.get("base_batch_size", 16), "auto_scale_lr.base_batch_size", minimum=1, example=16),
    )


def _device(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"device: expected cpu, cuda or cuda:N, got {_show(value)}")
    return value


def _optional_str(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a path or URI string, or null, got {_show(value)}")
    return value


@dataclass(frozen=True)
class RunSettings:
    """Everything ``det train`` reads from a config besides the component nodes it builds."""

    data: DataSettings
    optim: OptimSettings
    schedule: ScheduleSettings
    evaluation: EvalSettings
    checkpoint: CheckpointSettings
    log: LogSettings
    dist: DistSettings
    auto_scale_lr: AutoScaleLrSettings
    seed: int | None = None
    deterministic: bool = False
    load_from: str | None = None
    resume_from: str | None = None
    work_dir: str | None = None
    device: str | None = None
    custom_hooks: tuple[dict[str, Any], ...] = ()

    def replace(self, **changes: Any) -> "RunSettings":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return replace(self, **changes)


def parse_settings(cfg: Mapping[str, Any]) -> RunSettings:
    """Parse the runtime sections of a resolved config (see the module docstring).

    Raises:
        ConfigError: the key path, what was expected and what was found.
    """
    seed = cfg.get("seed")
    if seed is not None and not is_int(seed):
        raise ConfigError(f"seed: expected an integer (e.g. seed: 0), got {_show(seed)}")
    custom = cfg.get("custom_hooks") or []
    if not isinstance(custom, (list, tuple)) or not all(isinstance(h, Mapping) for h in custom):
        raise ConfigError(f"custom_hooks: expected a list of {{type: ...}} nodes, got {_show(custom)}")
    return RunSettings(
        data=_data(cfg),
        optim=_optim(cfg),
        schedule=_schedule(cfg),
        evaluation=_evaluation(cfg),
        checkpoint=_checkpoint(cfg),
        log=_logging(cfg),
        dist=_dist(cfg),
        auto_scale_lr=_auto_scale(cfg),
        seed=seed,
        deterministic=_bool(cfg.get("deterministic", False), "deterministic"),
        load_from=_optional_str(cfg.get("load_from"), "load_from"),
        resume_from=_optional_str(cfg.get("resume_from"), "resume_from"),
        work_dir=_optional_str(cfg.get("work_dir"), "work_dir"),
        device=_device(cfg.get("device")),
        custom_hooks=tuple(dict(h) for h in custom),
    )


__all__ = [
    "AutoScaleLrSettings", "CheckpointSettings", "DataSettings", "DistSettings", "EvalSettings", "Fp16Settings",
    "LoaderSettings", "LogSettings", "OptimSettings", "RUNNER_TYPES", "RunSettings", "ScheduleSettings",
    "loader_settings", "parse_settings", "train_batch_size", "runner_settings", "split_dataset_node",
]
