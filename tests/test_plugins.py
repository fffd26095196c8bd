"""Extending det without editing it: public registries, custom_imports, det.plugins entry points.

The end-to-end tests write a small plugin package into ``tmp_path`` (a backbone and a hook,
registered with the public decorators) and train a tiny FCOS with them through ``det train`` in a
subprocess: once found through the config's ``custom_imports``, once through a ``det.plugins``
entry point declared by a ``.dist-info`` directory on the path (no pip, no network).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import detcli
from detcli import plugins
from detcli.errors import ConfigError, PluginError, RegistryError
from detcli.registry import (
    BACKBONES,
    BBOX_ASSIGNERS,
    DATASETS,
    DETECTORS,
    HEADS,
    HOOKS,
    LOSSES,
    MODELS,
    NECKS,
    PIPELINES,
    REGISTRIES,
    TRANSFORMS,
    Registry,
)

ROOT = Path(detcli.__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- registries


def test_public_registry_names_follow_mmdet() -> None:
    import detcli.data  # noqa: F401  (registers datasets and transforms)
    import detcli.engine.hooks  # noqa: F401
    import detcli.models  # noqa: F401

    assert PIPELINES is TRANSFORMS and MODELS is DETECTORS
    assert "ResNet" in BACKBONES and "FPN" in NECKS and "RetinaHead" in HEADS and "FocalLoss" in LOSSES
    assert "RetinaNet" in MODELS and "CocoDataset" in DATASETS and "Resize" in PIPELINES
    assert "MaxIoUAssigner" in BBOX_ASSIGNERS and "CheckInvalidLossHook" in HOOKS
    assert set(REGISTRIES) >= {"BACKBONES", "NECKS", "HEADS", "DETECTORS", "LOSSES", "PIPELINES", "DATASETS", "HOOKS"}


def test_register_decorator_forms_and_duplicate_names_both_classes() -> None:
    reg = Registry("widget")

    @reg.register()
    class Alpha:
        pass

    @reg.register(name="Beta")
    class Other:
        pass

    def make_gamma() -> str:
        return "g"

    reg.register(make_gamma)
    assert reg.get("Alpha") is Alpha and reg.get("Beta") is Other and reg.get("make_gamma")() == "g"
    assert reg.register(Alpha) is Alpha  # the same object again: fine

    class Impostor:
        pass

    with pytest.raises(RegistryError) as e:
        reg.register(Impostor, name="Alpha")
    message = str(e.value)
    assert "widget 'Alpha' is already registered by" in message
    assert "test_plugins." in message and ".Alpha" in message and ".Impostor" in message and "force=True" in message
    assert isinstance(e.value, ConfigError) and isinstance(e.value, ValueError)
    reg.register(Impostor, name="Alpha", force=True)
    assert reg.get("Alpha") is Impostor
    with pytest.raises(RegistryError, match="not a class or function"):
        reg.register(3, name="three")  # type: ignore[arg-type]


def test_registering_a_builtin_name_is_refused() -> None:
    import detcli.models  # noqa: F401

    class ResNet(torch.nn.Module):
        pass

    with pytest.raises(RegistryError, match=r"backbone 'ResNet' is already registered by detcli\.models\..*ResNet"):
        BACKBONES.register(ResNet)
    assert BACKBONES.get("ResNet") is not ResNet


# ----------------------------------------------------------------------------- custom_imports


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_custom_imports_imports_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "ci_ok_pkg" / "__init__.py", "")
    _write(tmp_path / "ci_ok_pkg" / "mod.py", """
        from detcli.registry import LOSSES

        @LOSSES.register()
        class CiOkLoss:
            def __init__(self, loss_weight=1.0):
                self.loss_weight = loss_weight
        """)
    _write(tmp_path / "ci_bad_mod.py", "raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert plugins.import_custom_modules({"imports": ["ci_ok_pkg.mod"]}, "my.yaml") == ["ci_ok_pkg.mod"]
        assert "CiOkLoss" in LOSSES
        with pytest.raises(PluginError) as e:
            plugins.import_custom_modules({"imports": ["ci_ok_pkg.mod", "ci_missing_pkg.head"]}, "my.yaml")
        message = str(e.value)
        assert message.startswith("my.yaml: custom_imports.imports.1: cannot import module 'ci_missing_pkg.head'")
        assert "ModuleNotFoundError" in message and "\n" not in message
        with pytest.raises(PluginError, match=r"imports.0: cannot import module 'ci_bad_mod': RuntimeError: boom second line"):
            plugins.import_custom_modules({"imports": "ci_bad_mod"}, "my.yaml")
        with caplog.at_level(logging.WARNING, logger="detcli"):
            got = plugins.import_custom_modules({"imports": ["ci_missing_pkg", "ci_ok_pkg.mod"],
                                                 "allow_failed_imports": True}, "my.yaml")
        assert got == ["ci_ok_pkg.mod"]
        assert "module 'ci_missing_pkg' failed to import and is ignored" in caplog.text
        with pytest.raises(PluginError, match="custom_imports.imports: expected a list of module names"):
            plugins.import_custom_modules({"imports": [3]}, "my.yaml")
        with pytest.raises(PluginError, match="custom_imports.allow_failed_imports: expected true or false"):
            plugins.import_custom_modules({"imports": [], "allow_failed_imports": "yes"}, "my.yaml")
    finally:
        LOSSES.unregister("CiOkLoss")
        for name in ("ci_ok_pkg", "ci_ok_pkg.mod", "ci_bad_mod"):
            sys.modules.pop(name, None)


def test_load_config_runs_custom_imports_and_checks_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detcli.config import load_config

    _write(tmp_path / "ci_cfg_mod.py", "import builtins\nbuiltins._det_ci_cfg_mod_ran = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _write(tmp_path / "c.yaml", "_base_: quickstart\ncustom_imports: {imports: [ci_cfg_mod]}\n")
    try:
        load_config(cfg)
        import builtins

        assert getattr(builtins, "_det_ci_cfg_mod_ran", False)
        bad = _write(tmp_path / "bad.yaml", "_base_: quickstart\ncustom_imports: {imports: [ci_nope_mod]}\n")
        with pytest.raises(PluginError, match=r"bad.yaml: custom_imports.imports.0: cannot import module 'ci_nope_mod'"):
            load_config(bad)
        typo = _write(tmp_path / "typo.yaml", "_base_: quickstart\ncustom_imports: {import: [x]}\n")
        with pytest.raises(ConfigError, match="unknown key 'custom_imports.import'"):
            load_config(typo)
    finally:
        sys.modules.pop("ci_cfg_mod", None)
        import builtins

        if hasattr(builtins, "_det_ci_cfg_mod_ran"):
            del builtins._det_ci_cfg_mod_ran


def test_entry_point_failure_names_the_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "ep_broken_plugin.py", "raise ImportError('needs libfoo')\n")
    _write(tmp_path / "ep_broken-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: ep-broken\nVersion: 1.0\n")
    _write(tmp_path / "ep_broken-1.0.dist-info" / "entry_points.txt", "[det.plugins]\nbroken = ep_broken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(PluginError) as e:
            plugins.load_entry_points(reload=True)
        message = str(e.value)
        assert "plugin 'broken' (ep_broken_plugin) of the installed distribution 'ep-broken' failed to load" in message
        assert "ImportError: needs libfoo" in message
    finally:
        sys.modules.pop("ep_broken_plugin", None)


# ----------------------------------------------------------------------------- training with a plugin

PLUGIN_BACKBONE = '''
"""A plugin backbone: three strided conv stages (registered with det's public decorator)."""
import json
import os

import torch
from torch import nn

from detcli.registry import BACKBONES


@BACKBONES.register()
class PluginConvNet(nn.Module):
    def __init__(self, channels=(8, 16, 32), init_cfg=None):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers.append(nn.Sequential(nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()))
            c_in = c
        self.stem = nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding=1), nn.ReLU())  # total stride 4 before stage 1
        self.stages = nn.ModuleList(layers)
        self.seen_shapes = []

    def init_weights(self, allow_partial=False):
        return []

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        self.seen_shapes = [list(o.shape) for o in outs]
        return tuple(outs)
'''

PLUGIN_HOOK = '''
"""A plugin hook: records lr and loss per iteration and the backbone's output shapes."""
import json

from detcli.engine.hooks import Hook
from detcli.registry import HOOKS


@HOOKS.register()
class PluginRecordHook(Hook):
    def __init__(self, out_file, tag="custom"):
        self.out_file = out_file
        self.tag = tag
        self.rows = []

    def after_iter(self, runner):
        self.rows.append({"iter": runner.iter, "lr": runner.current_lr, "loss": float(runner.outputs["loss"])})

    def after_run(self, runner):
        record = {"tag": self.tag, "rows": self.rows, "backbone": type(runner.model.backbone).__name__,
                  "shapes": runner.model.backbone.seen_shapes, "work_dir": str(runner.work_dir)}
        with open(self.out_file, "w") as f:
            json.dump(record, f)
'''


def _plugin_package(root: Path, name: str) -> None:
    _write(root / name / "__init__.py", "")
    _write(root / name / "backbone.py", PLUGIN_BACKBONE)
    _write(root / name / "hooks.py", PLUGIN_HOOK)


def _tiny_config(tmp_path: Path, record: Path, extra: str = "") -> Path:
    return _write(tmp_path / "plugin_fcos.yaml", f"""
        _base_: quickstart
        {extra}
        model:
          backbone: {{_delete_: true, type: PluginConvNet, channels: [8, 16, 32]}}
          neck: {{in_channels: [8, 16, 32], out_channels: 16, start_level: 0, num_outs: 3}}
          bbox_head: {{in_channels: 16, feat_channels: 16, stacked_convs: 1, strides: [8, 16, 32],
                      norm_cfg: {{type: GN, num_groups: 4, requires_grad: true}},
                      regress_ranges: [[-1, 16], [16, 32], [32, 100000000]]}}
        data:
          samples_per_gpu: 2
          train: {{num_images: 4, img_size: 64, pipeline: [
            {{type: LoadImageFromFile}}, {{type: LoadAnnotations, with_bbox: true}},
            {{type: Resize, img_scale: [64, 64], keep_ratio: true}},
            {{type: Normalize, mean: [0, 0, 0], std: [255, 255, 255], to_rgb: true}},
            {{type: Pad, size_divisor: 32}}, {{type: DefaultFormatBundle}},
            {{type: Collect, keys: [img, gt_bboxes, gt_labels]}}]}}
        lr_config: {{_delete_: true, policy: fixed}}
        runner: {{type: IterBasedRunner, max_iters: 3}}
        checkpoint_config: {{interval: 3}}
        log_config: {{interval: 1}}
        custom_hooks: [{{type: PluginRecordHook, out_file: "{record}", tag: demo, priority: LOW}}]
        """)


def _det_train(cfg: Path, work_dir: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(pythonpath)]))
    return subprocess.run(
        [sys.executable, "-m", "detcli", "train", str(cfg), "--work-dir", str(work_dir), "--no-validate"],
        cwd=work_dir.parent, env=env, capture_output=True, text=True, timeout=600,
    )


def _check_record(record: Path) -> None:
    data = json.loads(record.read_text())
    assert data["tag"] == "demo" and data["backbone"] == "PluginConvNet"
    assert [r["iter"] for r in data["rows"]] == [1, 2, 3]
    assert all(r["lr"] == pytest.approx(0.002) and r["loss"] > 0 for r in data["rows"])
    # batch 2 of 64x64 images through a stride-2 stem and three stride-2 stages
    assert data["shapes"] == [[2, 8, 16, 16], [2, 16, 8, 8], [2, 32, 4, 4]]


@pytest.mark.slow
def test_det_train_with_a_custom_imports_plugin(tmp_path: Path) -> None:
    plugin_root = tmp_path / "plugin_src"
    _plugin_package(plugin_root, "detplug_demo")
    record = tmp_path / "record.json"
    cfg = _tiny_config(tmp_path, record, "custom_imports: {imports: [detplug_demo.backbone, detplug_demo.hooks]}")
    proc = _det_train(cfg, tmp_path / "run", plugin_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_record(record)
    assert (tmp_path / "run" / "iter_3.pth").exists()
    # the checkpoint's config keeps custom_imports: det test/export import the plugin again from it
    saved = (tmp_path / "run" / "plugin_fcos.yaml").read_text()
    assert "detplug_demo.backbone" in saved


@pytest.mark.slow
def test_det_train_with_an_entry_point_plugin(tmp_path: Path) -> None:
    plugin_root = tmp_path / "site"
    _plugin_package(plugin_root, "detplug_ep")
    _write(plugin_root / "detplug_ep" / "plugin.py", "def register():\n    import detplug_ep.backbone, detplug_ep.hooks\n")
    dist_info = plugin_root / "detplug_ep-0.1.dist-info"
    _write(dist_info / "METADATA", "Metadata-Version: 2.1\nName: detplug-ep\nVersion: 0.1\n")
    _write(dist_info / "entry_points.txt", "[det.plugins]\ndemo = detplug_ep.plugin:register\n")
    record = tmp_path / "record.json"
    cfg = _tiny_config(tmp_path, record)  # no custom_imports: the entry point registers everything
    proc = _det_train(cfg, tmp_path / "run", plugin_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_record(record)
    # without the plugin on the path the same config fails at check time, naming the unknown backbone
    proc = subprocess.run([sys.executable, "-m", "detcli", "config", "check", str(cfg)], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "unknown backbone 'PluginConvNet'" in proc.stderr
