"""read_checkpoint / safe_torch_load: formats recognised, foreign objects inert, pickle payloads refused."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.errors import CheckpointError
from detcli.weights import read_checkpoint
from detcli.weights.reader import Opaque, is_dangerous


def _fake_mmengine_checkpoint(path: Path) -> None:
    """Save an MMEngine-style file with a HistoryBuffer object from a module that exists only while saving."""
    names = ["mmengine", "mmengine.logging", "mmengine.logging.history_buffer"]
    mods = {n: types.ModuleType(n) for n in names}

    class HistoryBuffer:
        def __init__(self) -> None:
            self._log_history = np.array([0.5, 0.25])
            self.max_length = 5

    HistoryBuffer.__module__ = "mmengine.logging.history_buffer"
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    mods["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer
    sys.modules.update(mods)
    try:
        torch.save({
            "meta": {"mmdet_version": "3.3.0", "epoch": np.int64(12), "dataset_meta": {"classes": ("cat", "dog")}},
            "state_dict": OrderedDict([("backbone.conv1.weight", torch.ones(2, 3))]),
            "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}},
            "optimizer": {"state": {}, "param_groups": []},
        }, path)
    finally:
        for n in names:
            sys.modules.pop(n, None)


def test_mmengine_checkpoint_reads_with_inert_objects(tmp_path: Path) -> None:
    path = tmp_path / "mm3.pth"
    _fake_mmengine_checkpoint(path)
    assert "mmengine" not in sys.modules
    ck = read_checkpoint(path)
    assert ck.source == "mmdet" and ck.version == "MMDetection 3.3.0 (MMEngine)"
    assert ck.classes == ("cat", "dog")
    assert int(ck.meta["epoch"]) == 12  # numpy scalars are rebuilt as numpy values
    buffer = ck.raw["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Opaque) and "HistoryBuffer" in repr(buffer)
    assert not hasattr(buffer, "_log_history")  # nothing of the object was kept
    assert "mmengine" not in sys.modules  # the real class was never imported
    assert torch.equal(ck.state_dict["backbone.conv1.weight"], torch.ones(2, 3))


@pytest.mark.parametrize("legacy", [False, True])
def test_mmdet2_checkpoint(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "mm2.pth"
    obj = {"meta": {"mmdet_version": "2.28.2", "CLASSES": ("a", "b", "c"), "config": "model = dict(type='RetinaNet')",
                    "epoch": 12, "iter": 87960},
           "state_dict": OrderedDict([("module.bbox_head.retina_cls.weight", torch.zeros(27, 4, 3, 3))]),
           "optimizer": {"state": {}, "param_groups": []}}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    ck = read_checkpoint(path)
    assert (ck.source, ck.version, ck.classes) == ("mmdet", "MMDetection 2.28.2", ("a", "b", "c"))
    assert list(ck.state_dict) == ["bbox_head.retina_cls.weight"]  # DataParallel prefix dropped


def test_torchvision_and_bare_state_dicts(tmp_path: Path) -> None:
    tv = tmp_path / "tv.pth"
    torch.save({"backbone.body.conv1.weight": torch.ones(1), "rpn.head.cls_logits.weight": torch.ones(1)}, tv)
    assert read_checkpoint(tv).source == "torchvision"
    bare = tmp_path / "bare.pth"
    torch.save({"conv1.weight": torch.ones(1), "fc.weight": torch.ones(1)}, bare)
    ck = read_checkpoint(bare)
    assert ck.source == "state_dict" and ck.classes is None
    wrapped = tmp_path / "ref.pth"  # torchvision's reference scripts: {"model": sd, "optimizer": ..., "epoch": ...}
    torch.save({"model": {"backbone.body.conv1.weight": torch.ones(1)}, "epoch": 3}, wrapped)
    assert read_checkpoint(wrapped).source == "torchvision"


class Payload:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self):  # what an attacker would ship: run a command when unpickled
        return (os.system, (" ".join(self.argv),))


class EvalPayload:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


class PopenPayload:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def __reduce__(self):
        return (subprocess.Popen, (self.argv,))


@pytest.mark.parametrize("kind", ["system", "eval", "popen"])
@pytest.mark.parametrize("where", ["meta", "state_dict"])
def test_malicious_payload_is_refused_and_never_runs(tmp_path: Path, kind: str, where: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"system": Payload(["touch", str(marker)]),
               "eval": EvalPayload(f"open({str(marker)!r}, 'w').close()"),
               "popen": PopenPayload(["touch", str(marker)])}[kind]
    obj = {"meta": {"mmdet_version": "2.25.0"}, "state_dict": {"w": torch.ones(1)}}
    obj[where] = {"x": payload} if where == "meta" else {"w": torch.ones(1), "x": payload}
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=r"evil.pth: refused: loading it would call .*a pickle payload"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("name,bad", [("posix.system", True), ("builtins.eval", True), ("subprocess.Popen", True),
                                      ("os.path.join", True), ("mmengine.logging.HistoryBuffer", False),
                                      ("numpy.dtype", False)])
def test_dangerous_names(name: str, bad: bool) -> None:
    assert is_dangerous(name) is bad


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut.pth: not a torch checkpoint file \(truncated, damaged or another format"):
        read_checkpoint(cut)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a torch checkpoint file"):
        read_checkpoint(text)
    lst = tmp_path / "list.pth"
    torch.save([1, 2], lst)
    with pytest.raises(CheckpointError, match="holds a list, not a dict of weights"):
        read_checkpoint(lst)
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(CheckpointError, match=r"no 'state_dict' of tensors \(top-level keys: none\)"):
        read_checkpoint(empty)
