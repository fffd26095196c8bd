"""ResNeXt, ResNetV1d and ResNet's ``deep_stem`` / ``avg_down`` options.

- float64 equality with MMDetection on golden files it wrote (``tests/golden/mmdet_backbone_<case>.pt``, made
  by ``make_mmdet_golden.py backbone_<case>``): the recipe weights under mmdet's names, written as an mmdet
  checkpoint and loaded through det's ``init_cfg: {type: Pretrained}`` path, every stage map within 1e-9;
- the full-size backbones' key names, shapes and parameter counts equal mmdet 3.3.0's (hard-coded below);
- torchvision's ResNeXt files load into det's ResNeXt unchanged and give torchvision's features (float64).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from detcli.config import load_config
from detcli.errors import ConfigError
from detcli.models.backbones import ResNet, ResNetV1d, ResNeXt
from detcli.models.backbones.resnext import bottleneck_width
from detcli.models.weight_maps import convert_state_dict
from detcli.models.weight_maps.mmdet import to_mmdet_names
from detcli.registry import BACKBONES, DETECTORS, build
from detcli.weights import OPEN_MMLAB_URLS, read_checkpoint, torchvision_weights_url

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
_spec = importlib.util.spec_from_file_location("mmdet_recipe", GOLDEN / "mmdet_recipe.py")
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)

CASES = ("resnext50_4x4d", "resnext50_4x4d_v1d", "resnetv1d18", "resnetv1d50", "resnet18_b32", "resnet50_b32_s16_v1d")
F64_TOL = 1e-9
F32_REL = 1e-3

#: mmdet 3.3.0 (``MODELS.build(cfg)``): parameter count, state-dict entries, and the first 16 hex digits of
#: sha256(repr(sorted((key, shape) of the state dict)))
MMDET_FULL_SIZE = {
    "x101_32x4d": ({"type": "ResNeXt", "depth": 101, "groups": 32, "base_width": 4}, 42128704, 624, "1e5aed2137553337"),
    "x101_64x4d": ({"type": "ResNeXt", "depth": 101, "groups": 64, "base_width": 4}, 81406272, 624, "b9f83771fd6c76ba"),
    "v1d_50": ({"type": "ResNetV1d", "depth": 50}, 23527264, 330, "dc5520af8c5125d2"),
    "v1d_101": ({"type": "ResNetV1d", "depth": 101}, 42519392, 636, "aef49124edaf0fe9"),
    "v1c_50": ({"type": "ResNet", "depth": 50, "deep_stem": True}, 23527264, 330, "683e6c9e2e896a94"),
}


def signature(model: nn.Module) -> tuple[int, int, str]:
    sd = model.state_dict()
    keys = repr(sorted((k, tuple(v.shape)) for k, v in sd.items()))
    return sum(p.numel() for p in model.parameters()), len(sd), hashlib.sha256(keys.encode()).hexdigest()[:16]


def det_backbone_cfg(golden: dict, checkpoint: Path | None = None) -> dict:
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in golden["mmdet_config"].items()}
    cfg["init_cfg"] = None if checkpoint is None else {"type": "Pretrained", "checkpoint": str(checkpoint)}
    return cfg


def mmdet_backbone_file(golden: dict, path: Path) -> Path:
    """The recipe weights as an MMDetection 2.x detector file (``backbone.`` keys), as mmdet's generator used."""
    shapes = {f"backbone.{k}": tuple(s) for k, s in golden["state_dict_shapes"].items()}
    sd = {k: torch.from_numpy(v) for k, v in recipe.make_state_dict(shapes).items()}
    torch.save({"meta": {"mmdet_version": "2.28.2"}, "state_dict": sd}, path)
    assert read_checkpoint(path).source == "mmdet"
    return path


def compare_maps(maps, summaries, dtype: torch.dtype) -> None:
    assert len(maps) == len(summaries) == 4
    for m, s in zip(maps, summaries):
        assert list(m.shape) == list(s["shape"])
        m64 = m.detach().double()
        got = torch.cat([m64[:, ::s["step"]].reshape(-1), (m64.sum() / m.numel() ** 0.5).reshape(1),
                         (m64.square().sum() / m.numel()).sqrt().reshape(1)])
        want = torch.cat([s["values"].reshape(-1), torch.tensor([s["sum"] / m.numel() ** 0.5, (s["sumsq"] / m.numel()) ** 0.5],
                                                                 dtype=torch.float64)])
        diff, scale = float((got - want).abs().max()), float(want.abs().max())
        if dtype == torch.float64:
            assert diff <= F64_TOL, diff
        else:
            assert diff <= F32_REL * max(scale, 1.0), (diff, scale)


@pytest.fixture(scope="module", params=CASES)
def golden(request) -> dict:
    return torch.load(GOLDEN / f"mmdet_backbone_{request.param}.pt", map_location="cpu", weights_only=True)


def test_golden_backbone_keys_equal_mmdet(golden):
    model = build(det_backbone_cfg(golden), BACKBONES)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == golden["state_dict_shapes"]
    assert sum(p.numel() for p in model.parameters()) == golden["num_params"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_golden_backbone_equals_mmdet(golden, dtype, tmp_path):
    path = mmdet_backbone_file(golden, tmp_path / "mmdet.pth")
    model = build(det_backbone_cfg(golden, path), BACKBONES).to(dtype)  # before loading: no float32 rounding
    [report] = model.init_weights()
    assert report.complete
    model.eval()
    with torch.no_grad():
        maps = model(torch.from_numpy(recipe.make_images()).to(dtype))
    compare_maps(maps, golden["backbone"], dtype)


@pytest.mark.parametrize("name", sorted(MMDET_FULL_SIZE))
def test_full_size_backbones_match_mmdet_names_shapes_and_counts(name):
    cfg, params, entries, digest = MMDET_FULL_SIZE[name]
    with torch.device("meta"):
        model = build(cfg, BACKBONES)
    assert signature(model) == (params, entries, digest)


#: mmdet 3.3.0's configs of the same name (``.mim/configs``, backbone ``init_cfg`` dropped), built on the meta
#: device: parameter count, state-dict entries, sha256 prefix of the sorted (key, shape) list as above
MMDET_DETECTORS = {
    "retinanet_x101_32x4d_fpn_1x_coco": (32, 56589364, 660, "9beb4914f14929e1"),
    "retinanet_x101_64x4d_fpn_1x_coco": (64, 95866932, 660, "30c9b78f0f420d9f"),
    "faster_rcnn_x101_32x4d_fpn_1x_coco": (32, 60373728, 654, "1daea3a2f1bbc0ca"),
    "faster_rcnn_x101_64x4d_fpn_1x_coco": (64, 99651296, 654, "2cb20baa64b7ba21"),
}


def test_x101_presets_build_with_mmdet_backbones_and_keep_detector_keys():
    for preset, (groups, params, entries, digest) in MMDET_DETECTORS.items():
        cfg = load_config(str(ROOT / "presets" / f"{preset}.yaml"))
        backbone = cfg["model"]["backbone"]
        assert backbone["type"] == "ResNeXt" and (backbone["depth"], backbone["groups"], backbone["base_width"]) == (101, groups, 4)
        assert backbone["init_cfg"] == {"type": "Pretrained", "checkpoint": f"open-mmlab://resnext101_{groups}x4d"}
        assert backbone["style"] == "pytorch" and backbone["frozen_stages"] == 1 and backbone["norm_eval"] is True
        assert f"resnext101_{groups}x4d" in OPEN_MMLAB_URLS
        with torch.device("meta"):
            model = build(cfg["model"], DETECTORS, path="model")
        _, _, bb_entries, bb_digest = MMDET_FULL_SIZE[f"x101_{groups}x4d"]
        assert signature(model.backbone)[1:] == (bb_entries, bb_digest)
        # the whole detector under mmdet's names is mmdet's model, key for key and shape for shape
        own = model.state_dict()
        mm = to_mmdet_names(own)
        keys = repr(sorted((k, tuple(v.shape)) for k, v in mm.items()))
        assert (sum(p.numel() for p in model.parameters()), len(mm), hashlib.sha256(keys.encode()).hexdigest()[:16]) == (
            params, entries, digest)
        # and an mmdet file of it goes back through the key map (backbone keys unchanged)
        assert all(f"backbone.{k}" in mm for k in model.backbone.state_dict())
        assert set(convert_state_dict("mmdet", model, mm)) == set(own)


def test_open_mmlab_table_has_mmcv_resnext_and_v1c_entries():
    base = "https://download.openmmlab.com/pretrain/third_party/"
    assert OPEN_MMLAB_URLS["resnext101_32x4d"] == base + "resnext101_32x4d-a5af3160.pth"
    assert OPEN_MMLAB_URLS["resnext101_64x4d"] == base + "resnext101_64x4d-ee2c6f71.pth"
    assert OPEN_MMLAB_URLS["resnext50_32x4d"] == base + "resnext50-32x4d-0ab1a123.pth"
    assert OPEN_MMLAB_URLS["resnet50_v1c"] == base + "resnet50_v1c-2cccc1ad.pth"


# ------------------------------------------------------------------ structure


def test_bottleneck_widths_follow_mmdet_rule():
    assert [bottleneck_width(p, 32, 4) for p in (64, 128, 256, 512)] == [128, 256, 512, 1024]
    assert [bottleneck_width(p, 64, 4) for p in (64, 128, 256, 512)] == [256, 512, 1024, 2048]
    assert [bottleneck_width(p, 32, 8) for p in (64, 128, 256, 512)] == [256, 512, 1024, 2048]
    assert bottleneck_width(64, 3, 5) == 15  # floor(64 * 5 / 64) * 3
    assert bottleneck_width(128, 1, 4) == 128  # groups 1: ResNet's width whatever base_width says
    model = ResNeXt(depth=50, groups=32, base_width=4)
    for i, name in enumerate(model.stage_names):
        block = getattr(model, name)[0]
        width = bottleneck_width(64 * 2**i, 32, 4)
        assert block.conv2.groups == 32 and tuple(block.conv2.weight.shape) == (width, width // 32, 3, 3)
        assert block.conv1.out_channels == width and block.conv3.out_channels == 256 * 2**i
    assert model.out_channels == [256, 512, 1024, 2048]


def test_resnext_groups_one_is_resnet():
    a, b = ResNeXt(depth=50, groups=1, base_width=8), ResNet(depth=50)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 18, "groups": 32}, r"invalid depth 18 for ResNeXt \(choose from \[50, 101, 152\]\)"),
    ({"depth": 50, "groups": 0}, "groups and base_width must be >= 1"),
])
def test_resnext_rejects_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ResNeXt(**kwargs)


def test_v1d_stem_and_shortcuts():
    model = ResNetV1d(depth=50)
    assert not hasattr(model, "conv1") and not hasattr(model, "bn1")
    convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    assert [type(m).__name__ for m in model.stem] == ["Conv2d", "BatchNorm2d", "ReLU"] * 3
    # every projection shortcut: (pool, stride-1 conv, norm); layer1 keeps the size: a 1x1 (identity) pool
    for name, k in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
        pool, conv, _ = getattr(model, name)[0].downsample
        assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == k and pool.stride == k
        assert pool.ceil_mode and not pool.count_include_pad and conv.stride == (1, 1)
    assert "layer1.0.downsample.1.weight" in model.state_dict()
    r18 = ResNetV1d(depth=18)
    assert r18.layer1[0].downsample is None and isinstance(r18.layer2[0].downsample[0], nn.AvgPool2d)
    # odd sizes: ceil_mode pooling keeps the shortcut's size equal to the strided 3x3 path's
    maps = ResNetV1d(depth=18).eval()(torch.randn(1, 3, 100, 70))
    assert [tuple(m.shape[2:]) for m in maps] == [(25, 18), (13, 9), (7, 5), (4, 3)]


def test_avg_down_shortcut_is_pool_then_conv():
    torch.manual_seed(0)
    model = ResNet(depth=18, avg_down=True).eval()
    block = model.layer2[0]
    x = torch.randn(1, 64, 9, 7)
    pool = nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
    # the last column / row of a ceil-mode window averages only the cells inside
    assert torch.allclose(pool[0, :, 0, -1], x[0, :, 0:2, 6].mean(1))
    want = block.downsample[2](block.downsample[1](pool))
    assert torch.allclose(block.downsample(x), want)


def test_deep_stem_is_frozen_by_frozen_stages_zero():
    model = ResNet(depth=18, deep_stem=True, frozen_stages=0, norm_eval=False).train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not model.stem.training and model.layer1.training
    assert all(p.requires_grad for p in model.layer1.parameters())
    assert ResNet(depth=18, deep_stem=True, in_channels=1).stem[0].in_channels == 1


def test_plain_resnet_keeps_its_names():
    keys = list(ResNet(depth=18).state_dict())
    assert keys[:2] == ["conv1.weight", "bn1.weight"] and "layer2.0.downsample.0.weight" in keys
    assert not any(k.startswith("stem.") for k in keys)


# ------------------------------------------------------------------ torchvision


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics (torchvision's zero-initialised parts would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                elif t.ndim == 1:
                    t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen) if name.endswith("weight")
                            else 0.1 * torch.randn(t.shape, generator=gen))
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * (1.0 / t[0].numel()) ** 0.5)
    return model


def test_torchvision_resnext50_file_loads_and_equals_torchvision(tmp_path):
    ref = randomize(torchvision.models.resnext50_32x4d(), 0).double().eval()
    path = tmp_path / "resnext50_32x4d.pth"
    torch.save(ref.state_dict(), path)  # the layout of torchvision://resnext50_32x4d (a bare state dict with fc)
    model = ResNeXt(depth=50, groups=32, base_width=4, init_cfg={"type": "Pretrained", "checkpoint": str(path)})
    model = model.double()
    [report] = model.init_weights()
    assert report.complete
    model.eval()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        want = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            y = getattr(ref, name)(y)
            want.append(y)
    for g, w in zip(got, want):
        assert g.shape == w.shape and float((g - w).abs().max()) <= F64_TOL


@pytest.mark.parametrize("name, depth, groups, base_width", [
    ("resnext50_32x4d", 50, 32, 4), ("resnext101_32x8d", 101, 32, 8), ("resnext101_64x4d", 101, 64, 4)])
def test_torchvision_resnext_names_and_shapes_fit(name, depth, groups, base_width):
    with torch.device("meta"):
        ref = getattr(torchvision.models, name)()
        model = ResNeXt(depth=depth, groups=groups, base_width=base_width)
    want = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in model.state_dict().items()} == want
    url = torchvision_weights_url(name)  # what torchvision://NAME downloads
    assert url.startswith("https://download.pytorch.org/models/") and name in url.replace("-", "_")


def test_conv_bn_fusion_covers_deep_stem_and_pooled_shortcuts():
    from detcli.models.fuse import fuse_conv_bn

    model = randomize(ResNeXt(depth=50, groups=4, base_width=4, deep_stem=True, avg_down=True), 2).double().eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x)
        # 3 stem pairs, 3 per Bottleneck (16 blocks), 4 shortcuts
        assert fuse_conv_bn(model) == 3 + 3 * 16 + 4
        got = model(x)
    assert all(float((g - w).abs().max()) <= 1e-9 * max(1.0, float(w.abs().max())) for g, w in zip(got, want))


def test_errors_name_the_subclass():
    with pytest.raises(ConfigError, match=r"ResNeXt style 'x' is not supported"):
        ResNeXt(depth=50, groups=32, style="x")
    with pytest.raises(ConfigError, match=r"ResNetV1d frozen_stages must be in -1\.\.4, got 5"):
        ResNetV1d(depth=18, frozen_stages=5)
