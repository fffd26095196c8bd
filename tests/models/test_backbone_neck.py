import logging

import pytest
import torch
from torchvision.models import resnet18

from detcli.errors import CheckpointError, ConfigError
from detcli.models.backbones.resnet import ResNet
from detcli.models.necks.fpn import FPN
from detcli.registry import BACKBONES, NECKS, build


def test_resnet18_doc_shapes():
    model = ResNet(depth=18).eval()
    outs = model(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2), (1, 512, 1, 1)]


def test_resnet50_channels_and_out_indices():
    model = ResNet(depth=50, out_indices=(1, 3)).eval()
    assert model.out_channels == [256, 512, 1024, 2048]
    outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [512, 2048]


def test_frozen_stages_and_norm_eval():
    model = ResNet(depth=18, frozen_stages=1, norm_eval=True)
    model.train()
    assert not model.conv1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad and model.layer2[0].bn1.weight.requires_grad
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model = ResNet(depth=18, frozen_stages=0, norm_eval=False).train()
    assert not model.bn1.training and model.layer1[0].bn1.training and model.layer1[0].conv1.weight.requires_grad
    model = ResNet(depth=18, norm_cfg={"type": "BN", "requires_grad": False})
    assert not model.layer4[0].bn1.weight.requires_grad


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 19}, "depth"), ({"depth": 18, "style": "tensorflow"}, "tensorflow"), ({"depth": 18, "out_indices": (4,)}, "out_indices"),
    ({"depth": 18, "norm_cfg": {"type": "SyncBN"}}, "norm_cfg"), ({"depth": 18, "frozen_stages": 7}, "frozen_stages"),
])
def test_resnet_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ResNet(**kwargs)


def test_pretrained_torchvision_and_mmdet_formats(tmp_path, caplog):
    ref = resnet18()
    tv_path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), tv_path)
    model = ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(tv_path)})
    model.init_weights()
    assert torch.equal(model.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    mm_path = tmp_path / "mm.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in ref.state_dict().items()}}, mm_path)
    model = build({"type": "ResNet", "depth": 18, "init_cfg": {"type": "Pretrained", "checkpoint": str(mm_path)}}, BACKBONES)
    model.init_weights()
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    partial = tmp_path / "partial.pth"
    sd = ref.state_dict()
    sd.pop("conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, partial)
    with pytest.raises(CheckpointError, match=r"partial.pth: the weights do not fit the backbone: .*1 missing \(e.g. conv1.weight\).*strict: false"):
        ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(partial)}).init_weights()
    with caplog.at_level(logging.WARNING):
        reports = ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(partial), "strict": False}).init_weights()
    assert "conv1.weight" in caplog.text and "extra.weight" in caplog.text
    assert reports[0].missing == ["conv1.weight"] and reports[0].unexpected == ["extra.weight"]


def test_pretrained_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(missing)}).init_weights()
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth"):
        ResNet(depth=18, init_cfg={"type": "Pretrained", "checkpoint": str(bad)}).init_weights()


def test_fpn_doc_example():
    fpn = FPN([2, 3, 5, 7], 11, 4)
    inputs = [torch.rand(1, c, s, s) for c, s in zip([2, 3, 5, 7], [340, 170, 84, 43])]
    assert [list(o.shape) for o in fpn(inputs)] == [[1, 11, 340, 340], [1, 11, 170, 170], [1, 11, 84, 84], [1, 11, 43, 43]]


@pytest.mark.parametrize("extra", [False, True, "on_input", "on_lateral", "on_output"])
def test_fpn_extra_levels(extra):
    fpn = FPN([8, 16, 32], 4, 5, start_level=1, add_extra_convs=extra, relu_before_extra_convs=True)
    inputs = [torch.rand(1, 8, 32, 32), torch.rand(1, 16, 16, 16), torch.rand(1, 32, 8, 8)]
    outs = fpn(inputs)
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(o.shape[1] == 4 for o in outs)
    if extra in (True, "on_input"):
        assert fpn.fpn_convs[2][0].in_channels == 32


def test_fpn_end_level_and_errors():
    fpn = FPN([4, 8, 16], 4, 2, start_level=0, end_level=1)
    outs = fpn([torch.rand(1, 4, 8, 8), torch.rand(1, 8, 4, 4), torch.rand(1, 16, 2, 2)])
    assert len(outs) == 2
    with pytest.raises(ConfigError, match="add_extra_convs"):
        FPN([4, 8], 4, 3, add_extra_convs="on_top")
    with pytest.raises(ConfigError, match="num_outs"):
        FPN([4, 8, 16], 4, 2)
    with pytest.raises(ConfigError, match="unknown key 'num_out'"):
        build({"type": "FPN", "in_channels": [4], "out_channels": 4, "num_out": 1}, NECKS, path="model.neck")
