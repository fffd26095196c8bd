"""``log_config.hooks``: TensorBoard event files (no tensorboard needed to write them) and checks.

``log_config: {interval: 50, hooks: [{type: TextLoggerHook}, {type: TensorboardLoggerHook}]}``
(mmdet 2.x's schema):

- ``TextLoggerHook``: det's text and JSON-lines logs, always written (:class:`~detcli.engine.hooks.LoggerHook`);
  its ``interval`` (default ``log_config.interval``) sets their interval.
- ``TensorboardLoggerHook``: scalars to ``WORK_DIR/tf_logs/events.out.tfevents.*`` (``log_dir`` to
  change it), mmcv's tags: ``train/<loss term>`` averaged over the ``interval`` iterations since the
  last write, ``learning_rate`` and ``momentum`` (the first parameter group's), ``val/<metric>``
  after each evaluation; the step is the number of finished iterations. The file is TensorBoard's
  format (TFRecord framing with masked CRC-32C, ``Event``/``Summary`` protocol buffers) written by
  :class:`EventFileWriter`, so neither tensorboard nor protobuf is needed to write it; tensorboard
  (or ``tbparse``) reads it.
- Any other hook registered in ``HOOKS`` (a plugin's logger, docs/extending.md) is built with
  ``interval`` when it takes one. mmcv's other logger hooks (``WandbLoggerHook``, ``MlflowLoggerHook``,
  ...) are refused with a :class:`~detcli.errors.ConfigError` naming what det supports.
"""

from __future__ import annotations

import inspect
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch
from torch import Tensor

from detcli.engine.hooks import Hook, current_momentum
from detcli.errors import ConfigError, OutputError
from detcli.registry import HOOKS, build

if TYPE_CHECKING:
    from detcli.engine.runner import Runner

#: mmcv logger hooks det does not implement (named in the error).
UNSUPPORTED_LOGGERS = (
    "WandbLoggerHook", "MlflowLoggerHook", "NeptuneLoggerHook", "PaviLoggerHook", "DvcliveLoggerHook",
    "ClearMLLoggerHook", "SegmindLoggerHook", "SageMakerExperimentsLoggerHook", "MMDetWandbHook",
)
SUPPORTED_LOGGERS = ("TextLoggerHook", "TensorboardLoggerHook")
TEXT_LOGGER_KEYS = frozenset({"interval", "by_epoch", "ignore_last", "reset_flag", "interval_exp_name"})

# ----------------------------------------------------------------------------- event file encoding
_CRC32C_TABLE: list[int] = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord files use. ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add ``0xA282EAD8`` (mod 2**32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length (uint64 LE), its masked CRC, the data, the data's masked CRC."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative numbers
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
    """A serialized ``tensorflow.Event``: ``wall_time`` (1, double), ``step`` (2, int64),
    ``file_version`` (3, string) or ``summary`` (5) holding one ``Summary.Value`` per scalar
    (``tag`` 1, ``simple_value`` 2 as float32)."""
    out = _field(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += _field(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(value)))
            for tag, value in scalars.items()
        )
        out += _bytes_field(5, summary)
    return out


class EventFileWriter:
    """Appends scalar summaries to a new ``events.out.tfevents.<time>.<host>.<pid>`` file in ``log_dir``.

    Each :meth:`add_scalars` writes one ``Event`` and flushes, so the file is readable while training runs.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.log_dir}: cannot create the TensorBoard log dir: {e.strerror}") from e
        now = time.time()
        self.path = self.log_dir / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.0"
        n = 0
        while self.path.exists():  # two writers in one second (a resumed run): a new file each
            n += 1
            self.path = self.log_dir / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{n}"
        self._file: BinaryIO | None = open(self.path, "wb")
        self._write(encode_event(now, file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        if self._file is None:
            raise OutputError(f"{self.path}: the event file is closed")
        self._file.write(tfrecord(event))
        self._file.flush()

    def add_scalars(self, scalars: Mapping[str, float], step: int, wall_time: float | None = None) -> None:
        """Write ``{tag: value}`` at ``step`` (non-finite values are written as they are, as TensorBoard does)."""
        if scalars:
            self._write(encode_event(time.time() if wall_time is None else wall_time, step, scalars=scalars))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ----------------------------------------------------------------------------- the hook
@HOOKS.register()
class TensorboardLoggerHook(Hook):
    """Writes training scalars for TensorBoard (mmcv's ``TensorboardLoggerHook``, same tags and defaults).

    Args:
        log_dir: where the event file goes; None: ``WORK_DIR/tf_logs``.
        interval: write the loss averages every ``interval`` iterations (counted within the epoch
            when ``by_epoch`` and the run is epoch-based).
        ignore_last: at the end of an epoch, drop the average of fewer than ``interval`` iterations.
        reset_flag: accepted for mmcv configs (det's logger hooks keep their own buffers).
        by_epoch: count ``interval`` within epochs.
    """

    priority = 89  # after evaluation (LOW), just before the text logger (VERY_LOW) consumes the metrics

    def __init__(self, log_dir: str | None = None, interval: int = 10, ignore_last: bool = True,
                 reset_flag: bool = False, by_epoch: bool = True) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"TensorboardLoggerHook.interval: expected a positive integer, got {interval!r}")
        self.log_dir = log_dir
        self.interval = interval
        self.ignore_last = bool(ignore_last)
        self.by_epoch = bool(by_epoch)
        self.writer: EventFileWriter | None = None
        self._sums: dict[str, Tensor] = {}
        self._count = 0
        self._last_val: Any = None

    def before_run(self, runner: "Runner") -> None:
        if runner.rank != 0:
            return
        log_dir = Path(self.log_dir) if self.log_dir is not None else runner.work_dir / "tf_logs"
        self.writer = EventFileWriter(log_dir)

    def before_epoch(self, runner: "Runner") -> None:
        if runner.by_epoch and self.by_epoch:
            self._sums.clear()
            self._count = 0

    def _common(self, runner: "Runner") -> dict[str, float]:
        tags = {"learning_rate": runner.current_lr}
        momentum = current_momentum(runner.optimizer)
        if momentum is not None:
            tags["momentum"] = momentum
        return tags

    def after_iter(self, runner: "Runner") -> None:
        if self.writer is None:
            return
        for k, v in runner.log_vars.items():
            v = v.detach() if isinstance(v, Tensor) else torch.tensor(float(v))
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._count += 1
        inner = runner.by_epoch and self.by_epoch
        count = runner.inner_iter if inner else runner.iter
        end_of_epoch = runner.by_epoch and runner.inner_iter >= runner.iters_per_epoch
        if count % self.interval == 0 or (end_of_epoch and not self.ignore_last):
            tags = {f"train/{k}": float(v) / self._count for k, v in self._sums.items()}
            self.writer.add_scalars(tags | self._common(runner), runner.iter)
            self._sums.clear()
            self._count = 0
        self._write_val(runner)

    def after_epoch(self, runner: "Runner") -> None:
        self._write_val(runner)

    def _write_val(self, runner: "Runner") -> None:
        metrics = runner.pending_val
        if self.writer is None or metrics is None or metrics is self._last_val:
            return
        self._last_val = metrics
        tags = {f"val/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.writer.add_scalars(tags | self._common(runner), runner.iter)

    def after_run(self, runner: "Runner") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _takes(target: Any, name: str) -> bool:
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_logger_hooks(log_config: Mapping[str, Any] | None, *, dry_run: bool = False) -> tuple[int, list[Hook]]:
    """Read ``log_config``: returns ``(text log interval, the other logger hooks)``.

    Raises:
        ConfigError: an mmcv logger det does not implement, an unknown hook or key, naming ``log_config.hooks.N``.
    """
    cfg = dict(log_config or {})
    interval = cfg.get("interval", 50)
    text_interval = interval
    hooks: list[Hook] = []
    nodes = cfg.get("hooks") or []
    if not isinstance(nodes, Sequence) or isinstance(nodes, (str, bytes)):
        raise ConfigError(f"log_config.hooks: expected a list of {{type: ...}} mappings, got {nodes!r}")
    for i, node in enumerate(nodes):
        path = f"log_config.hooks.{i}"
        if not isinstance(node, Mapping) or "type" not in node:
            raise ConfigError(f"{path}: expected a mapping with a 'type' key (e.g. {{type: TensorboardLoggerHook}}), got {node!r}")
        kind = node["type"]
        if kind in UNSUPPORTED_LOGGERS:
            raise ConfigError(
                f"{path}: {kind} is not supported by det (supported: {', '.join(SUPPORTED_LOGGERS)}, or a logger hook "
                "registered by a plugin, see docs/extending.md); remove it from log_config.hooks"
            )
        if kind == "TextLoggerHook":
            extra = set(node) - {"type"} - TEXT_LOGGER_KEYS
            if extra:
                key = sorted(extra)[0]
                raise ConfigError(f"{path}.{key}: not supported by det's TextLoggerHook (the text and JSON logs are "
                                  f"always written to the work dir; valid keys: {', '.join(sorted(TEXT_LOGGER_KEYS))})")
            text_interval = node.get("interval", interval)
            if isinstance(text_interval, bool) or not isinstance(text_interval, int) or text_interval < 1:
                raise ConfigError(f"{path}.interval: expected a positive integer, got {text_interval!r}")
            continue
        given = {"interval": interval} if kind in HOOKS and "interval" not in node and _takes(HOOKS.get(kind), "interval") else {}
        hook = build(node, HOOKS, path=path, dry_run=dry_run, **given)
        if not dry_run:
            hooks.append(hook)
    return int(text_interval), hooks


__all__ = ["EventFileWriter", "TensorboardLoggerHook", "build_logger_hooks", "crc32c", "encode_event", "masked_crc32c"]
