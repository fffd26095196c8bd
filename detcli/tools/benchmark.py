"""Speed, memory and size of a preset's model (``det benchmark PRESET [CKPT]``).

- ``inference``: images of ``data.test`` one at a time through ``model.predict``. Each timed iteration
  is split into *data* (fetching and collating the batch), *forward* (backbone, neck and the head's
  network, up to the end of the head's ``forward``, found with a forward hook) and *post-processing*
  (decoding, NMS and mapping back to the original image). FPS counts forward + post-processing, not
  data loading (mmdet's "inference time"). The first ``num_warmup`` iterations are not timed; a
  split shorter than ``max_iter`` is looped over. With ``backend="onnxruntime"`` the model is a graph
  written by ``det export onnx`` run by ONNX Runtime on the CPU: *forward* is the session's run (the
  graph holds decoding and NMS too) and *post-processing* what follows it (reading the outputs into
  ``Detections``, mapping back to the original image).
- ``dataloader``: batches of ``data.train`` as the training loader makes them (its batch size and
  workers); FPS is images per second of loading.
- :func:`count_flops`: FLOPs (``torch.utils.flop_counter.FlopCounterMode``, one multiply-add = 2
  FLOPs) and parameters of the network (backbone, neck, head forward; no post-processing) on one
  ``(1, 3, H, W)`` input.

Peak memory is the process's peak resident set size on the CPU (``resource.getrusage``; it includes
everything the process touched since it started) and ``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from detcli.errors import ConfigError

logger = logging.getLogger(__name__)

TASKS = ("inference", "dataloader")


@dataclass
class BenchmarkResult:
    """Timings of :func:`benchmark`.

    Attributes:
        task: ``inference`` or ``dataloader``.
        device: where the model ran.
        weights: ``checkpoint PATH`` or ``random init (no checkpoint)``; empty for ``dataloader``.
        fused_conv_bn: number of conv + BN pairs fused (0: not asked or none found).
        num_warmup: untimed iterations; iterations: timed ones; batch_size: images per iteration.
        fps: images per second (inference: forward + post-processing; dataloader: loading).
        latency_ms: ``{median, p90, mean}`` per iteration (inference: forward + post-processing).
        split_ms: median ms per iteration of ``data``, ``forward``, ``postprocess`` (inference).
        peak_memory_mb: peak memory; memory_kind: ``cpu_rss`` or ``cuda_allocated``.
    """

    task: str
    device: str
    weights: str
    fused_conv_bn: int
    num_warmup: int
    iterations: int
    batch_size: int
    fps: float
    latency_ms: dict[str, float]
    split_ms: dict[str, float]
    peak_memory_mb: float
    memory_kind: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class FlopsResult:
    """FLOPs (2 per multiply-add) and parameters of the network at ``shape = (H, W)``.

    Attributes:
        by_module: FLOPs of the top-level parts (``backbone``, ``neck``, ``bbox_head``).
        params_by_module: parameters of the same parts.
    """

    shape: tuple[int, int]
    flops: int
    params: int
    by_module: dict[str, int] = field(default_factory=dict)
    params_by_module: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "flops": self.flops, "gflops": round(self.flops / 1e9, 4),
                "params": self.params, "mparams": round(self.params / 1e6, 4),
                "by_module": self.by_module, "params_by_module": self.params_by_module}


def format_count(value: float, unit: str = "") -> str:
    """``1234567 -> '1.23 M'`` (k, M, G, T).

    Example:
        >>> format_count(2.5e9, "FLOPs"), format_count(999)
        ('2.5 GFLOPs', '999')
    """
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:g}{' ' + unit if unit else ''}"


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """``(peak MiB, kind)``: CUDA max allocated on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "cpu_rss"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(loader: Any) -> Iterator[Any]:
    """Batches of ``loader``, restarting it (next epoch) when it runs out."""
    epoch = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            return
        epoch += 1
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        logger.info("the split is shorter than the run: looping over it again (pass %d)", epoch + 1)


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1e3
    if arr.size == 0:
        return {"median": 0.0, "p90": 0.0, "mean": 0.0}
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "mean": float(arr.mean())}


def prepare_model(cfg: Mapping[str, Any], checkpoint: str | os.PathLike[str] | None, device: torch.device,
                  fuse: bool) -> tuple[torch.nn.Module, str, int]:
    """``(model in eval mode on device, weights description, number of conv+BN pairs fused)``."""
    from detcli.engine.builders import build_model, load_model
    from detcli.models.fuse import fuse_conv_bn

    if checkpoint is not None:
        model = load_model(checkpoint, cfg=cfg, device=str(device)).model
        weights = f"checkpoint {checkpoint}"
    else:
        weights = "random init (no checkpoint)"
        logger.info("no checkpoint given: the model has random weights (speed is the same, detections are not)")
        model = build_model(cfg).to(device).eval()
    fused = fuse_conv_bn(model) if fuse else 0
    if fuse:
        logger.info("fused %d conv + BN pairs", fused)
    return model, weights, fused


def prepare_onnx(path: str | os.PathLike[str], fuse: bool, device: torch.device) -> tuple[Any, str]:
    """``(OnnxPredictor, weights description)`` for ``backend="onnxruntime"``."""
    from detcli.engine.onnx_export import OnnxPredictor

    if fuse:
        raise ConfigError("--fuse-conv-bn applies to PyTorch models; ONNX Runtime folds BatchNorm into the "
                          "convolutions of the graph itself (drop the flag)")
    if device.type != "cpu":
        raise ConfigError(f"--backend onnxruntime runs on the CPU; drop --device {device}")
    return OnnxPredictor(path), f"ONNX Runtime graph {path}"


def benchmark(
    cfg: Mapping[str, Any],
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    backend: str = "pytorch",
    task: str = "inference",
    max_iter: int = 2000,
    num_warmup: int = 5,
    log_interval: int = 50,
    fuse_conv_bn: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Time ``task`` for ``max_iter`` iterations (the first ``num_warmup`` untimed); see the module doc.

    Args:
        checkpoint: a det checkpoint (``backend="pytorch"``; None: random weights) or a graph written by
            ``det export onnx`` (``backend="onnxruntime"``; required).
        log: receives a progress line every ``log_interval`` iterations (default: the module logger).

    Raises:
        ConfigError: unknown task or backend, ``max_iter <= num_warmup``, a bad split or model node, an
            ONNX benchmark without a graph, on a GPU or with ``fuse_conv_bn``.
        CheckpointError: a checkpoint that is not det's or does not fit the model; a file that is not a graph
            written by ``det export onnx``.
    """
    from detcli.engine.builders import build_split
    from detcli.engine.environment import resolve_device

    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    if num_warmup < 0 or max_iter <= num_warmup:
        raise ConfigError(f"--max-iter {max_iter} must be larger than --num-warmup {num_warmup} (>= 0)")
    if log_interval < 1:
        raise ConfigError(f"--log-interval {log_interval}: must be >= 1")
    if backend not in ("pytorch", "onnxruntime"):
        raise ConfigError(f"--backend {backend!r}: expected pytorch or onnxruntime")
    if backend == "onnxruntime" and task == "inference" and checkpoint is None:
        raise ConfigError("--backend onnxruntime times an exported graph: pass MODEL.onnx (from det export onnx)")
    emit = log or logger.info
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    from detcli.data import build_dataloader

    if task == "dataloader":
        if checkpoint is not None:
            logger.info("--task dataloader times data loading only; the checkpoint is not used")
        dataset, samples, workers = build_split(cfg, "train", test_mode=False)
        loader = build_dataloader(dataset, samples, workers, shuffle=True)
        return _time_loader(loader, samples, max_iter, num_warmup, log_interval, emit, dev)
    if backend == "onnxruntime":
        model, weights = prepare_onnx(checkpoint, fuse_conv_bn, dev)  # type: ignore[arg-type]
        fused = 0
    else:
        model, weights, fused = prepare_model(cfg, checkpoint, dev, fuse_conv_bn)
    dataset, _, workers = build_split(cfg, "test", test_mode=True)
    loader = build_dataloader(dataset, 1, workers, shuffle=False)
    return _time_inference(model, loader, cfg, max_iter, num_warmup, log_interval, emit, dev, weights, fused)


def _time_loader(loader: Any, batch_size: int, max_iter: int, num_warmup: int, log_interval: int,
                 emit: Callable[[str], None], dev: torch.device) -> BenchmarkResult:
    times: list[float] = []
    images = 0
    batches = _cycle(loader)
    for i in range(max_iter):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        elapsed = time.perf_counter() - t0
        if i >= num_warmup:
            times.append(elapsed)
            images += len(batch)
            if (i + 1) % log_interval == 0:
                emit(f"iter {i + 1}/{max_iter}: {images / sum(times):.1f} img/s loading")
    mem, kind = peak_memory_mb(dev)
    total = sum(times)
    return BenchmarkResult("dataloader", str(dev), "", 0, num_warmup, len(times), batch_size,
                           images / total if total else 0.0, _stats(times), {"data": _stats(times)["median"]}, mem, kind)


def _time_inference(model: Any, loader: Any, cfg: Mapping[str, Any], max_iter: int, num_warmup: int,
                    log_interval: int, emit: Callable[[str], None], dev: torch.device, weights: str,
                    fused: int) -> BenchmarkResult:
    from detcli.engine.tester import postprocess_batch

    head = getattr(model, "bbox_head", None)
    marks: dict[str, float] = {}

    def head_done(*_: Any) -> None:
        _sync(dev)
        marks["forward_end"] = time.perf_counter()

    hook = head.register_forward_hook(head_done) if isinstance(head, torch.nn.Module) else None
    if hook is None and hasattr(model, "after_run"):  # an ONNX Runtime graph: forward = the session's run
        model.after_run = head_done
    data_t, fwd_t, post_t, total_t = [], [], [], []
    images = 0
    batches = _cycle(loader)
    try:
        for i in range(max_iter):
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            inputs = batch.images.to(dev)
            _sync(dev)
            t1 = time.perf_counter()
            marks.clear()
            postprocess_batch(model.predict(inputs), batch, cfg)  # type: ignore[operator]
            _sync(dev)
            t3 = time.perf_counter()
            t2 = marks.get("forward_end", t3)
            if i < num_warmup:
                continue
            data_t.append(t1 - t0)
            fwd_t.append(t2 - t1)
            post_t.append(t3 - t2)
            total_t.append(t3 - t1)
            images += len(batch.groups())
            if (i + 1) % log_interval == 0:
                emit(f"iter {i + 1}/{max_iter}: {images / sum(total_t):.2f} img/s, "
                     f"{np.median(total_t) * 1e3:.1f} ms/img (median)")
    finally:
        if hook is not None:
            hook.remove()
        if hasattr(model, "after_run"):
            model.after_run = None
    mem, kind = peak_memory_mb(dev)
    total = sum(total_t)
    split = {"data": _stats(data_t)["median"], "forward": _stats(fwd_t)["median"], "postprocess": _stats(post_t)["median"]}
    return BenchmarkResult("inference", str(dev), weights, fused, num_warmup, len(total_t), 1,
                           images / total if total else 0.0, _stats(total_t), split, mem, kind)


def default_flops_shape(cfg: Mapping[str, Any]) -> tuple[int, int]:
    """``(H, W)`` of a landscape image at the test split's scale, padded to 32 (``(800, 1344)`` for COCO)."""
    scale: Any = None

    def walk(steps: Any) -> None:
        nonlocal scale
        for step in steps or ():
            if not isinstance(step, Mapping):
                continue
            if scale is None and step.get("img_scale") is not None:
                scale = step["img_scale"]
            walk(step.get("transforms"))

    test = ((cfg.get("data") or {}).get("test") or {})
    walk(test.get("pipeline") if isinstance(test, Mapping) else None)
    if isinstance(scale, (list, tuple)) and scale and isinstance(scale[0], (list, tuple)):
        scale = scale[0]
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2):
        return 800, 1344
    h, w = min(scale), max(scale)
    return int(math.ceil(h / 32) * 32), int(math.ceil(w / 32) * 32)


def count_flops(cfg: Mapping[str, Any], shape: tuple[int, int] | None = None,
                checkpoint: str | os.PathLike[str] | None = None, fuse_conv_bn: bool = False) -> FlopsResult:
    """FLOPs and parameters of the network of ``cfg`` on a ``(1, 3, H, W)`` input (see the module doc).

    Raises:
        ConfigError: a non-positive shape.
    """
    from torch.utils.flop_counter import FlopCounterMode

    h, w = shape if shape is not None else default_flops_shape(cfg)
    if h < 1 or w < 1:
        raise ConfigError(f"--shape {h} {w}: expected two positive integers H W")
    model, _, _ = prepare_model(cfg, checkpoint, torch.device("cpu"), fuse_conv_bn)
    params = sum(p.numel() for p in model.parameters())
    parts = {name: m for name, m in model.named_children() if isinstance(m, torch.nn.Module)}
    counter = FlopCounterMode(display=False)
    images = torch.zeros(1, 3, int(h), int(w))
    with torch.no_grad(), counter:
        feats = model.extract_feat(images)  # type: ignore[operator]
        head = getattr(model, "bbox_head", None)
        if head is not None:
            head(feats)
    by_module_raw = counter.get_flop_counts()
    by_module = {}
    for name, part in parts.items():  # the parts are called directly: counted under their class names
        key = type(part).__name__
        if key in by_module_raw:
            by_module[name] = int(sum(by_module_raw[key].values()))
    return FlopsResult((int(h), int(w)), int(counter.get_total_flops()), int(params), by_module,
                       {name: int(sum(p.numel() for p in m.parameters())) for name, m in parts.items()})
