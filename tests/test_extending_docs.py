"""docs/extending.md's complete example runs: its plugin trains through `det train` and exports to ONNX."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import detcli

ROOT = Path(detcli.__file__).resolve().parent.parent
DOC = ROOT / "docs" / "extending.md"


def doc_files() -> dict[str, str]:
    """The fenced blocks of the doc whose first line is ``# file: NAME``."""
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = block
    return files


def test_the_doc_has_the_example_files() -> None:
    assert set(doc_files()) == {"my_det_plugin.py", "center_box_quickstart.yaml"}


@pytest.mark.slow
def test_doc_example_trains_and_exports(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    for name, text in doc_files().items():
        (plugin_dir if name.endswith(".py") else tmp_path).joinpath(name).write_text(text)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(plugin_dir)]))
    work = tmp_path / "run"
    small = ["data.samples_per_gpu=2", "data.train.num_images=4", "data.train.img_size=64",
             "data.train.pipeline.2.img_scale=[64,64]", "runner.max_iters=3", "checkpoint_config.interval=3",
             "log_config.interval=1"]
    train = subprocess.run(
        [sys.executable, "-m", "detcli", "train", str(tmp_path / "center_box_quickstart.yaml"), "--work-dir", str(work),
         "--no-validate", "--cfg-options", *small],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    rows = json.loads((work / "losses.json").read_text())  # written by the plugin's hook
    assert [r["iter"] for r in rows] == [1, 2, 3]
    assert all(r["loss_cls"] > 0 and r["loss_bbox"] >= 0 for r in rows)
    export = subprocess.run(
        [sys.executable, "-m", "detcli", "export", "onnx", str(work / "iter_3.pth"), "-o", str(tmp_path / "m.onnx"),
         "--verify", "--json", "--cfg-options", "model.test_cfg.score_thr=0.0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    summary = json.loads(export.stdout)
    assert summary["model"] == "SingleStageDetector" and (tmp_path / "m.onnx").exists()
    (row,) = summary["verify"]  # score_thr 0: the untrained head still yields max_per_img detections to compare
    assert row["ok"] and row["torch_dets"] == row["onnx_dets"] == row["matched"] == 100
