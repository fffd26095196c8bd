"""TensorboardLoggerHook: a real events.out.tfevents file, read back with tensorboard's own reader."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

import detcli.engine as engine
from detcli.engine.loggers import EventFileWriter, crc32c, encode_event, masked_crc32c, tfrecord

from engine_helpers import tiny_cfg


def test_crc32c_and_record_framing() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    rec = tfrecord(b"abc")
    assert struct.unpack("<Q", rec[:8])[0] == 3
    assert struct.unpack("<I", rec[8:12])[0] == masked_crc32c(rec[:8])
    assert rec[12:15] == b"abc" and struct.unpack("<I", rec[15:])[0] == masked_crc32c(b"abc")


def test_event_encoding_parses_as_the_tensorflow_proto() -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto.event_pb2 import Event

    ev = Event.FromString(encode_event(12.5, 7, scalars={"train/loss": 0.25, "learning_rate": -1.0}))
    assert ev.wall_time == 12.5 and ev.step == 7
    assert [(v.tag, v.simple_value) for v in ev.summary.value] == [("train/loss", 0.25), ("learning_rate", -1.0)]
    assert Event.FromString(encode_event(1.0, file_version="brain.Event:2")).file_version == "brain.Event:2"
    big = Event.FromString(encode_event(0.0, 2**40 + 3, scalars={"x": 1.0}))
    assert big.step == 2**40 + 3


def test_writer_file_read_by_event_accumulator(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    w = EventFileWriter(tmp_path / "logs")
    for step in (1, 2, 3):
        w.add_scalars({"a": step / 4, "b": -step}, step)
    w.close()
    assert w.path.name.startswith("events.out.tfevents.")
    acc = EventAccumulator(str(tmp_path / "logs"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["a", "b"]
    assert [(e.step, e.value) for e in acc.Scalars("a")] == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert [(e.step, e.value) for e in acc.Scalars("b")] == [(1, -1.0), (2, -2.0), (3, -3.0)]


def test_training_writes_losses_lr_momentum_and_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(log_config={"interval": 2, "hooks": [{"type": "TextLoggerHook"}, {"type": "TensorboardLoggerHook"}]})
    # 2 epochs of 4 iterations; lr: warmup over 3 iterations from 0.1x, then x0.1 from epoch 1 (step: [1])
    result = engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    files = list((tmp_path / "run" / "tf_logs").glob("events.out.tfevents.*"))
    assert len(files) == 1
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_cls", "train/loss_bbox", "learning_rate", "momentum", "val/bbox_mAP"} <= tags
    # the interval (2, inherited from log_config.interval) counts within the epoch: steps 2, 4, 6, 8
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4, 6, 8]
    # the values are the same averages as the JSON log's (float32 in the event file)
    records = [json.loads(line) for line in result.json_log.read_text().splitlines()[1:]]
    train = [r for r in records if r["mode"] == "train"]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    lr = {e.step: e.value for e in acc.Scalars("learning_rate") if e.step in (2, 4, 6, 8)}
    assert lr[2] == pytest.approx(0.1 * (1 - (1 - 1 / 3) * 0.9), rel=1e-6)  # iteration 1 (0-based) of the warmup
    assert lr[4] == pytest.approx(0.1, rel=1e-6) and lr[6] == pytest.approx(0.01, rel=1e-6)
    assert all(e.value == pytest.approx(0.9) for e in acc.Scalars("momentum"))
    val = acc.Scalars("val/bbox_mAP")
    assert [e.step for e in val] == [4, 8]
    metrics = [r for r in records if r["mode"] == "val"]
    assert [e.value for e in val] == pytest.approx([m["bbox_mAP"] for m in metrics], abs=1e-7)


def test_log_dir_and_ignore_last(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def run(ignore_last: bool, where: Path) -> list[int]:
        cfg = tiny_cfg(log_config={"interval": 3, "hooks": [{"type": "TensorboardLoggerHook", "log_dir": str(where),
                                                            "ignore_last": ignore_last}]})
        engine.train(cfg, work_dir=tmp_path / f"run_{ignore_last}", cfg_source="tiny.yaml", validate=False)
        acc = EventAccumulator(str(where))
        acc.Reload()
        return [e.step for e in acc.Scalars("train/loss")]

    assert run(True, tmp_path / "tb_a") == [3, 7]  # inner iterations 3 of each 4-iteration epoch
    assert run(False, tmp_path / "tb_b") == [3, 4, 7, 8]  # plus the partial average at each epoch's end


def test_iteration_based_run_logs_val_at_its_iterations(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(log_config={"interval": 3, "hooks": [{"type": "TensorboardLoggerHook"}]},
                   runner={"type": "IterBasedRunner", "max_iters": 8},
                   lr_config={"policy": "OneCycle", "max_lr": 0.1},
                   evaluation={"interval": 4, "by_epoch": False, "metric": "bbox"},
                   checkpoint_config={"interval": 8, "by_epoch": False})
    engine.train(cfg, work_dir=tmp_path / "run", cfg_source="tiny.yaml")
    acc = EventAccumulator(str(tmp_path / "run" / "tf_logs"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [3, 6]  # every 3 iterations (no epochs to end)
    assert [e.step for e in acc.Scalars("val/bbox_mAP")] == [4, 8]
    lrs = {e.step: e.value for e in acc.Scalars("learning_rate")}
    # OneCycle over 8 iterations: peak (0.1) at iteration 0.3 * 8 - 1 = 1.4; iteration 2 (0-based) is logged at step 3
    expected = 0.1 / 25 / 1e4 + 0.5 * (0.1 - 0.1 / 25 / 1e4) * (1 + math.cos(math.pi * 0.6 / 5.6))
    assert lrs[3] == pytest.approx(expected, rel=1e-6)
