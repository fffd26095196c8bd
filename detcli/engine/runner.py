"""The training loop: data, loss dict, sum, backward, clip, step; everything else is a hook.

:class:`Runner` runs epoch-based (``runner: {type: EpochBasedRunner, max_epochs: 12}``) or
iteration-based (``runner: {type: IterBasedRunner, max_iters: 90000}``) training. Per iteration
it only moves the batch to the device, calls ``model(images, targets)``, sums the loss terms
(keys containing ``loss``), runs backward, clips gradients when asked and steps the optimizer.
The lr schedule, NaN checks, checkpoints, evaluation and logging are :class:`~detcli.engine.hooks.Hook`
objects called at six points (``before_run``, ``before_epoch``, ``before_iter``, ``after_iter``,
``after_epoch``, ``after_run``) in priority order; ``after_run`` runs in a ``finally``.

Counters seen by hooks: ``runner.epoch`` and ``runner.iter`` count *finished* epochs and
iterations (in ``before_iter`` ``runner.iter`` is the 0-based index of the coming iteration; in
``after_iter`` it already includes it). ``runner.inner_iter`` is the same within the epoch.

Stopping: :func:`stop_on_signals` turns SIGTERM (what Slurm sends on preemption) and a first SIGINT
into :meth:`Runner.request_stop`; the runner finishes the current iteration, saves ``iter_N.pth``
(``latest.pth`` points at it) and raises :class:`TrainingInterrupted`, so ``--resume`` continues
exactly where it stopped. A second SIGINT interrupts at once (``KeyboardInterrupt``).

Weights for evaluation and checkpoints: a hook with ``swap_weights(runner)`` (``ExpMomentumEMAHook``)
exchanges the model's weights with its own; :meth:`Runner.eval_weights` swaps them in around
evaluation and every checkpoint, so both use (and checkpoints' ``state_dict`` holds) the EMA
weights. A hook with ``checkpoint_state(runner)`` adds its state to checkpoints under
``hooks.<ClassName>``; a resumed run finds it in ``runner.resumed_hook_states``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detcli.engine.checkpoint import atomic_link, atomic_save, make_checkpoint, preserved_rng, set_rng_state
from detcli.engine.dist import get_dist_info, reduce_mean_dict
from detcli.engine.hooks import PRIORITIES, Hook, priority_value
from detcli.engine.progress import ProgressCallback
from detcli.errors import ConfigError, OutputError, TrainingError

logger = logging.getLogger(__name__)


class TrainingInterrupted(TrainingError):
    """Training stopped on a signal (SIGTERM, SIGINT) after saving a checkpoint to resume from.

    Attributes:
        signal_name: ``SIGTERM`` / ``SIGINT``.
        checkpoint: the checkpoint saved (``latest.pth`` points at it), or None on ranks other than 0.
    """

    def __init__(self, message: str, signal_name: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.checkpoint = checkpoint

RUNNER_TYPES = ("EpochBasedRunner", "IterBasedRunner")


def parse_losses(losses: Mapping[str, Tensor | list[Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
    """Sum the loss terms of a model's loss dict.

    Args:
        losses: ``{name: Tensor or list[Tensor]}``; lists (per level) are summed after averaging.

    Returns:
        ``(loss, log_vars)``: the scalar to back-propagate (sum of the entries whose key contains
        ``loss``) and every entry reduced to a detached scalar, plus ``loss`` itself.

    Example:
        >>> loss, log = parse_losses({"loss_cls": torch.tensor(1.0), "loss_bbox": torch.tensor(2.0), "num_pos": torch.tensor(3.0)})
        >>> float(loss), sorted(log)
        (3.0, ['loss', 'loss_bbox', 'loss_cls', 'num_pos'])
    """
    values: dict[str, Tensor] = {}
    for name, value in losses.items():
        if isinstance(value, Tensor):
            values[name] = value.mean()
        elif isinstance(value, (list, tuple)) and all(isinstance(v, Tensor) for v in value):
            values[name] = sum(v.mean() for v in value)  # type: ignore[assignment]
        else:
            raise TrainingError(f"model loss '{name}' is a {type(value).__name__}, expected a tensor or a list of tensors")
    terms = [v for k, v in values.items() if "loss" in k]
    if not terms:
        raise TrainingError(f"the model returned no loss term (keys: {', '.join(values) or 'none'}); names must contain 'loss'")
    loss = terms[0] if len(terms) == 1 else torch.stack(terms).sum()
    log_vars = {k: v.detach() for k, v in values.items()}
    log_vars["loss"] = loss.detach()
    return loss, log_vars


class Runner:
    """Runs training and calls hooks; holds the state hooks read.

    Args:
        model: the detector, on ``device``, in train mode.
        optimizer: built over the model's trainable parameters.
        make_loader: ``epoch -> iterable of Batch`` for that (0-based) epoch.
        iters_per_epoch: batches per epoch.
        work_dir: where hooks write.
        runner_type: ``EpochBasedRunner`` or ``IterBasedRunner``.
        max_epochs: length of an epoch-based run.
        max_iters: length of an iteration-based run.
        grad_clip: ``{max_norm, norm_type}`` for ``clip_grad_norm_``, or None.
        device: where batches go.
        config: the resolved config (stored in checkpoints).
        classes: class names (stored in checkpoints).
        progress: called with progress events by the hooks.
        train_module: what training forwards through (the DistributedDataParallel wrapper of
            ``model`` under DDP); default ``model``. Checkpoints and evaluation use ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        make_loader: Callable[[int], Iterable[Any]],
        iters_per_epoch: int,
        work_dir: Path,
        *,
        runner_type: str = "EpochBasedRunner",
        max_epochs: int | None = None,
        max_iters: int | None = None,
        grad_clip: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        config: Mapping[str, Any] | None = None,
        classes: tuple[str, ...] | list[str] = (),
        progress: ProgressCallback | None = None,
        train_module: nn.Module | None = None,
    ) -> None:
        if runner_type not in RUNNER_TYPES:
            raise ConfigError(f"runner.type: unknown runner '{runner_type}' (known: {', '.join(RUNNER_TYPES)})")
        self.by_epoch = runner_type == "EpochBasedRunner"
        if self.by_epoch and not max_epochs:
            raise ConfigError("runner.max_epochs: an EpochBasedRunner needs max_epochs >= 1")
        if not self.by_epoch and not max_iters:
            raise ConfigError("runner.max_iters: an IterBasedRunner needs max_iters >= 1")
        if iters_per_epoch <= 0:
            raise TrainingError("the training data loader yields no batch (is the dataset empty?)")
        self.model = model
        self.train_module = train_module if train_module is not None else model
        self.optimizer = optimizer
        self.make_loader = make_loader
        self.iters_per_epoch = iters_per_epoch
        self.work_dir = Path(work_dir)
        self.max_epochs = max_epochs if self.by_epoch else None
        self.max_iters = (max_epochs * iters_per_epoch) if self.by_epoch else int(max_iters)  # type: ignore[arg-type, operator]
        self.grad_clip = dict(grad_clip) if grad_clip else None
        self.device = torch.device(device)
        self.config = dict(config or {})
        self.classes = tuple(classes)
        self.progress = progress
        self.rank, self.world_size = get_dist_info()
        self.epoch = 0
        self.iter = 0
        self.inner_iter = 0
        self.outputs: dict[str, Any] = {}
        self.log_vars: dict[str, Tensor] = {}
        self.data_time = 0.0
        self.meta: dict[str, Any] = {}
        self.last_metrics: dict[str, float] = {}
        self.pending_val: dict[str, float] | None = None
        self.datasets: dict[str, Any] = {}
        self.resumed_hook_states: dict[str, Any] = {}
        #: ``(images, targets) -> (images, targets)`` applied to every training batch on the device (hooks add them)
        self.batch_transforms: list[Callable[[Any, Any], tuple[Any, Any]]] = []
        self._pending_rng: dict[str, Any] | None = None
        self.saved_checkpoints: list[Path] = []
        self.saved_iter = -1  # the iteration latest.pth resumes from (written with the optimizer, or resumed from)
        self.stop_reason: str | None = None
        self._stepping = False
        self._hooks: list[tuple[int, Hook]] = []
        self._params: list[Tensor] = [p for g in optimizer.param_groups for p in g["params"]]

    # ----------------------------------------------------------------- hooks
    @property
    def hooks(self) -> list[Hook]:
        return [h for _, h in self._hooks]

    def register_hook(self, hook: Hook, priority: int | str | None = None) -> None:
        """Insert ``hook`` after every hook of higher or equal priority (lower value runs first)."""
        value = priority_value(priority if priority is not None else hook.priority)
        index = len(self._hooks)
        for i, (p, _) in enumerate(self._hooks):
            if value < p:
                index = i
                break
        self._hooks.insert(index, (value, hook))

    def call_hook(self, name: str) -> None:
        for _, hook in self._hooks:
            getattr(hook, name)(self)

    # ----------------------------------------------------------------- state
    @property
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def finished(self) -> bool:
        if self.by_epoch:
            return self.epoch >= self.max_epochs  # type: ignore[operator]
        return self.iter >= self.max_iters

    def resume_state(
        self, epoch: int, iter: int, meta: Mapping[str, Any] | None = None, rng_state: Mapping[str, Any] | None = None
    ) -> None:
        """Continue from a checkpoint taken after ``epoch`` epochs and ``iter`` iterations.

        ``rng_state`` is restored right before the first iteration that runs (after the loader of
        the epoch was re-created and, mid-epoch, the finished batches skipped), which is where the
        uninterrupted run took it.
        """
        self.epoch = int(epoch)
        self.iter = int(iter)
        if not self.by_epoch:
            self.epoch = self.iter // self.iters_per_epoch
        self.meta.update(meta or {})
        self.saved_iter = self.iter
        self._pending_rng = dict(rng_state) if rng_state is not None else None

    @contextlib.contextmanager
    def eval_weights(self) -> Iterator[None]:
        """Within the block the model holds the weights to evaluate and save (e.g. EMA weights)."""
        swappers = [h for h in self.hooks if hasattr(h, "swap_weights")]
        for h in swappers:
            h.swap_weights(self)
        try:
            yield
        finally:
            for h in reversed(swappers):
                h.swap_weights(self)

    def save_checkpoint(self, path: Path, save_optimizer: bool = True, scheduler: Mapping[str, Any] | None = None) -> Path:
        """Write a checkpoint of the current state to ``path`` (rank 0 only; atomic)."""
        with self.eval_weights():
            return self._save_checkpoint(path, save_optimizer, scheduler)

    def _save_checkpoint(self, path: Path, save_optimizer: bool, scheduler: Mapping[str, Any] | None) -> Path:
        ckpt = make_checkpoint(
            self.model,
            epoch=self.epoch,
            iter=self.iter,
            config=self.config,
            classes=self.classes,
            optimizer=self.optimizer if save_optimizer else None,
            scheduler=scheduler if scheduler is not None else self.meta.get("scheduler"),
            extra_meta={k: v for k, v in self.meta.items() if k not in ("scheduler",)},
        )
        hook_states = {type(h).__name__: h.checkpoint_state(self) for h in self.hooks if hasattr(h, "checkpoint_state")}
        if hook_states:
            ckpt["hooks"] = hook_states
        if self.rank == 0:
            try:
                atomic_save(ckpt, path)
            except OutputError as e:
                latest = self.work_dir / "latest.pth"
                kept = (
                    f"{latest} still holds iteration {self.saved_iter} and resumes with --resume"
                    if latest.exists() and self.saved_iter >= 0 else "no checkpoint of this run was written yet"
                )
                raise OutputError(f"checkpoint at iteration {self.iter} not saved: {e}; {kept}") from e
        return path

    def save_latest(self, unit: str, count: int, save_optimizer: bool = True) -> Path:
        """Save ``<unit>_<count>.pth`` in the work dir and point ``latest.pth`` at it (rank 0 writes)."""
        path = self.save_checkpoint(self.work_dir / f"{unit}_{count}.pth", save_optimizer=save_optimizer)
        if self.rank == 0:
            atomic_link(path, self.work_dir / "latest.pth")
            self.saved_checkpoints.append(path)
            logger.info("saved checkpoint %s", path)
        if save_optimizer:  # latest.pth resumes from here
            self.saved_iter = self.iter
        return path

    def request_stop(self, reason: str) -> None:
        """Stop after the current iteration with a checkpoint (what :func:`stop_on_signals` calls)."""
        self.stop_reason = reason

    def _stop_requested(self) -> bool:
        flag = self.stop_reason is not None
        if self.world_size > 1:  # every rank stops at the same iteration (collectives stay matched)
            import torch.distributed as torch_dist

            device = self.device if torch_dist.get_backend() == "nccl" else torch.device("cpu")
            t = torch.tensor([1.0 if flag else 0.0], device=device)
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
            if t.item() > 0 and self.stop_reason is None:
                self.stop_reason = "SIGTERM (on another rank)"
            flag = t.item() > 0
        return flag

    def _stop(self, cause: BaseException | None = None) -> None:
        """Save a checkpoint of the finished iterations (unless one was cut off) and raise TrainingInterrupted."""
        reason = self.stop_reason or "a stop request"
        latest = self.work_dir / "latest.pth"
        if self._stepping:  # the signal's fallout cut an iteration short: its state is not one to resume from
            kept = (f"{latest} (iteration {self.saved_iter})" if self.rank == 0 and latest.exists() and self.saved_iter >= 0
                    else None)
            raise TrainingInterrupted(
                f"stopped by {reason} during iteration {self.iter + 1}/{self.max_iters} ({cause}): "
                + (f"continue from {kept} with --resume" if kept else "no checkpoint was saved yet; start the run again")
                + f" (work dir {self.work_dir})",
                reason.split()[0], latest if kept else None,
            ) from cause
        path, saved = None, ""
        if self.saved_iter != self.iter:
            path = self.save_latest("iter", self.iter)
            saved = f"saved {path}; " if self.rank == 0 else ""
        elif self.rank == 0:
            path = latest
            saved = f"{latest} holds it; "
        raise TrainingInterrupted(
            f"stopped by {reason} after iteration {self.iter}/{self.max_iters}: {saved}"
            f"continue with --resume (work dir {self.work_dir})",
            reason.split()[0], path,
        ) from cause

    def _restore_rng(self) -> None:
        set_rng_state(self._pending_rng)  # type: ignore[arg-type]
        self._pending_rng = None

    # ----------------------------------------------------------------- loop
    def run_iter(self, batch: Any) -> None:
        """One optimisation step on ``batch`` (a ``Batch`` with images and targets)."""
        images, targets = batch.images, batch.targets
        if self.device.type != "cpu":
            images = images.to(self.device, non_blocking=True)
            targets = [t.to(self.device) for t in targets]
        for transform in self.batch_transforms:
            images, targets = transform(images, targets)
        losses = self.train_module(images, targets)
        loss, log_vars = parse_losses(losses)
        log_vars = reduce_mean_dict(log_vars)  # logged values are means over ranks (one all-reduce)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            params = [p for p in self._params if p.grad is not None]
            if params:
                grad_norm = nn.utils.clip_grad_norm_(params, **self.grad_clip)
                log_vars["grad_norm"] = grad_norm.detach()
        self.optimizer.step()
        self.outputs = {"loss": log_vars["loss"], "log_vars": log_vars, "num_samples": len(images)}
        self.log_vars = log_vars

    def run(self) -> None:
        """Train until ``max_epochs``/``max_iters``; ``after_run`` hooks run even on errors."""
        self.model.train()
        self.call_hook("before_run")
        try:
            while not self.finished:
                self._run_epoch()
        except TrainingInterrupted:
            raise
        except Exception as e:
            # after a stop signal, data loader workers that got it too fail the loader (torch raises
            # from its SIGCHLD handler, wherever training is): stop cleanly instead of a traceback
            if self.stop_reason is None:
                raise
            self._stop(cause=e)
        finally:
            self.call_hook("after_run")

    def _run_epoch(self) -> None:
        skip = self.iter - self.epoch * self.iters_per_epoch  # batches of this epoch already done (iter resume)
        loader = self.make_loader(self.epoch)
        self.inner_iter = 0
        self.call_hook("before_epoch")
        with preserved_rng():  # a DataLoader iterator draws its base seed from the torch RNG: keep it out of training's stream
            batches = iter(loader)
        tick = time.perf_counter()
        for i, batch in enumerate(batches):
            if i < skip:
                tick = time.perf_counter()
                continue
            if self._pending_rng is not None:
                self._restore_rng()
            self.inner_iter = i
            self.data_time = time.perf_counter() - tick
            self.call_hook("before_iter")
            self._stepping = True  # weights and optimizer change: no checkpoint can be taken until the end
            self.run_iter(batch)
            self.iter += 1
            self._stepping = False
            self.inner_iter = i + 1
            self.call_hook("after_iter")
            if self._stop_requested():
                self._stop()
            tick = time.perf_counter()
            if self.finished and not self.by_epoch:
                break
        if self.inner_iter >= self.iters_per_epoch or self.by_epoch:
            self.epoch += 1
            self.call_hook("after_epoch")
            if not self.finished and self._stop_requested():  # e.g. SIGTERM during the epoch's evaluation
                self._stop()


@contextlib.contextmanager
def stop_on_signals(runner: Runner) -> Iterator[None]:
    """While training, SIGTERM and a first SIGINT ask ``runner`` to checkpoint and stop; a second SIGINT
    interrupts at once. Handlers are installed only in the main thread and restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if runner.stop_reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        runner.request_stop(name)
        logger.warning("%s received: saving a checkpoint after the current iteration, then stopping "
                       "(Ctrl-C again to stop at once without one)", name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["PRIORITIES", "RUNNER_TYPES", "Runner", "TrainingInterrupted", "parse_losses", "stop_on_signals"]
