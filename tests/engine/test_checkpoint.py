"""Checkpoints: structure, weights_only loading, atomic writes, RNG states and bad files."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detcli.engine.checkpoint import (
    atomic_save,
    get_rng_state,
    load_checkpoint,
    load_state_dict,
    make_checkpoint,
    preserved_rng,
    set_rng_state,
)
from detcli.errors import CheckpointError


def small_model(num_classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, num_classes, 1))


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    cfg = {"model": {"type": "X", "num_classes": 3}, "data": {"samples_per_gpu": 2}, "seed": 0}
    ckpt = make_checkpoint(model, epoch=2, iter=40, config=cfg, classes=("a", "b", "c"), optimizer=opt,
                           scheduler={"policy": "step"}, extra_meta={"best": {"key": "bbox_mAP", "score": 0.5}})
    path = atomic_save(ckpt, tmp_path / "epoch_2.pth")
    raw = torch.load(path, weights_only=True)  # plain containers only
    assert raw["meta"]["epoch"] == 2 and raw["meta"]["iter"] == 40
    loaded = load_checkpoint(path)
    meta = loaded["meta"]
    assert meta["config"] == cfg
    assert meta["classes"] == ["a", "b", "c"]
    assert meta["det_version"] and meta["format"] == "det-checkpoint"
    assert meta["best"]["score"] == 0.5
    assert loaded["scheduler"] == {"policy": "step"}
    assert set(loaded["rng"]) == {"python", "numpy", "torch", "cuda"}
    fresh = small_model()
    load_state_dict(fresh, loaded["state_dict"], path)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_2.pth"]  # no temp file left


def test_atomic_save_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "latest.pth"
    atomic_save({"x": torch.ones(1)}, target)

    class Unpicklable:
        def __reduce__(self):  # type: ignore[override]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, target)
    assert torch.load(target, weights_only=True)["x"].item() == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"]


def test_rng_state_round_trip() -> None:
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_rng_state_survives_weights_only_save(tmp_path: Path) -> None:
    state = get_rng_state()
    atomic_save({"rng": state}, tmp_path / "r.pth")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(torch.load(tmp_path / "r.pth", weights_only=True)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])


def test_preserved_rng_restores_streams() -> None:
    torch.manual_seed(3)
    with preserved_rng():
        torch.rand(10)
        random.random()
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


class Evil:
    pass


@pytest.mark.parametrize(
    "kind,match",
    [
        ("random", "not a torch checkpoint file"),
        ("json", "not a torch checkpoint file"),
        ("empty", "not a torch checkpoint file"),
        ("state_dict", "not a det checkpoint: a bare state dict .*init_cfg"),
        ("globals", "not a det checkpoint: a checkpoint dict without det or MMDetection meta"),
        ("other_dict", r"no 'state_dict' of tensors \(top-level keys: epoch, weights\)"),
        ("list", "holds a list"),
    ],
)
def test_not_a_det_checkpoint(tmp_path: Path, kind: str, match: str) -> None:
    path = tmp_path / f"{kind}.pth"
    if kind == "random":
        path.write_bytes(os.urandom(2048))
    elif kind == "json":
        path.write_text(json.dumps({"state_dict": {}}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "state_dict":
        torch.save(small_model().state_dict(), path)
    elif kind == "globals":
        torch.save({"meta": Evil(), "state_dict": {}}, path)
    elif kind == "other_dict":
        torch.save({"epoch": 1, "weights": torch.ones(1)}, path)
    else:
        torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_pickle_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"meta": {}, "state_dict": {}}))
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_damaged_meta(tmp_path: Path) -> None:
    ckpt = make_checkpoint(small_model(), epoch=1, iter=1, config={}, classes=())
    del ckpt["meta"]["classes"]
    atomic_save(ckpt, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="meta has no 'classes'"):
        load_checkpoint(tmp_path / "c.pth")


def test_load_state_dict_mismatch_names_keys(tmp_path: Path) -> None:
    sd = small_model(3).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatch 2 \(e.g. 2.weight \(3, 4, 1, 1\) vs model \(5, 4, 1, 1\)"):
        load_state_dict(small_model(5), sd, "x.pth")
    del sd["0.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1 \(e.g. 0.bias\)"):
        load_state_dict(small_model(3), sd, "x.pth")


def test_load_weights_leaves_only_class_layers_random() -> None:
    from detcli.weights import load_weights

    src = small_model(3)
    dst = small_model(5)
    with pytest.raises(CheckpointError, match=r"x.pth: the weights do not fit the model: 7 of 9 tensors loaded, 2 of another shape"):
        load_weights(dst, src.state_dict(), source="x.pth")
    report = load_weights(dst, src.state_dict(), source="x.pth", class_patterns=[r"^2\."])
    assert [m.split(":")[0] for m in report.mismatched] == ["2.weight", "2.bias"]
    assert report.class_layers == ["2.weight", "2.bias"] and report.missing == [] and report.unexpected == []
    assert torch.equal(dst[0].weight, src[0].weight)
    assert dst[2].weight.shape == (5, 4, 1, 1)
