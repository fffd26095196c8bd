"""ResNet's ``base_channels`` / ``stem_channels`` (mmdet 2.x semantics): widths, names, init, defaults."""

import pytest
import torch
from torchvision.models import resnet18

from detcli.errors import ConfigError
from detcli.models.backbones.resnet import ResNet, ResNetV1d


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_resnet18_base32_shapes_and_channels():
    model = ResNet(depth=18, base_channels=32).eval()
    assert model.out_channels == [32, 64, 128, 256]
    outs = model(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2), (1, 256, 1, 1)]
    assert model.conv1.weight.shape == (32, 3, 7, 7)  # stem_channels defaults to base_channels
    assert model.layer1[0].downsample is None  # 32 -> 32 at stride 1: identity shortcut, as at width 64
    assert model.layer2[0].downsample[0].weight.shape == (64, 32, 1, 1)
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[1].conv1.stride == (1, 1)


def test_resnet50_base32_bottleneck_widths():
    model = ResNet(depth=50, base_channels=32, out_indices=(0, 3)).eval()
    assert model.out_channels == [128, 256, 512, 1024]
    block = model.layer1[0]
    assert (block.conv1.weight.shape, block.conv2.weight.shape, block.conv3.weight.shape) == (
        (32, 32, 1, 1), (32, 32, 3, 3), (128, 32, 1, 1))
    assert block.downsample[0].weight.shape == (128, 32, 1, 1)  # channels change at stride 1
    assert model.layer4[0].conv2.weight.shape == (256, 256, 3, 3)
    outs = model(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 16, 16), (1, 1024, 2, 2)]


def test_stem_channels_plain_and_deep():
    model = ResNet(depth=18, base_channels=32, stem_channels=16)
    assert model.conv1.weight.shape == (16, 3, 7, 7) and model.bn1.weight.shape == (16,)
    assert model.layer1[0].conv1.weight.shape == (32, 16, 3, 3)
    assert model.layer1[0].downsample[0].weight.shape == (32, 16, 1, 1)  # 16 -> 32 needs a projection
    deep = ResNet(depth=18, stem_channels=32, deep_stem=True)  # mmdet: s/2, s/2, s
    assert [deep.stem[i].weight.shape[:2] for i in (0, 3, 6)] == [(16, 3), (16, 16), (32, 16)]
    assert deep.layer1[0].conv1.weight.shape == (64, 32, 3, 3) and deep.out_channels == [64, 128, 256, 512]
    v1d = ResNetV1d(depth=50, base_channels=16).eval()
    assert v1d.out_channels == [64, 128, 256, 512] and v1d.stem[6].weight.shape[0] == 16
    assert isinstance(v1d.layer2[0].downsample[0], torch.nn.AvgPool2d)
    assert v1d(torch.rand(1, 3, 32, 32))[3].shape == (1, 512, 1, 1)


def test_same_parameter_names_at_any_width():
    for depth in (18, 50):
        slim, full = ResNet(depth=depth, base_channels=32), ResNet(depth=depth)
        assert list(slim.state_dict()) == list(full.state_dict())
        # every channel count halves (the image's 3 input channels and the kernel sizes do not)
        halved = {k: tuple(d // 2 if i < 2 and d > 3 else d for i, d in enumerate(s)) for k, s in _shapes(full).items()}
        assert _shapes(slim) == halved


def test_default_width_unchanged():
    """64 (explicit or default) is torchvision's network with torchvision's random init."""
    torch.manual_seed(3)
    default = ResNet(depth=18)
    torch.manual_seed(3)
    explicit = ResNet(depth=18, base_channels=64, stem_channels=64)
    torch.manual_seed(3)
    tv = resnet18(zero_init_residual=True)  # our default
    for (k, a), (k2, b) in zip(default.state_dict().items(), explicit.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    tv_state = tv.state_dict()
    for k, v in default.state_dict().items():
        assert torch.equal(v, tv_state[k]), k


def test_slim_init_and_caffe_style():
    model = ResNet(depth=50, base_channels=16, style="caffe")
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert all(float(b.bn3.weight.abs().sum()) == 0.0 for b in model.layer1)  # zero_init_residual
    assert torch.equal(model.layer1[0].bn1.weight, torch.ones(16))
    std = float(model.layer3[0].conv2.weight.std())  # Kaiming fan-out: sqrt(2 / (64 * 9))
    assert abs(std - (2 / (64 * 9)) ** 0.5) < 0.01
    plain = ResNet(depth=18, base_channels=16, zero_init_residual=False)
    assert torch.equal(plain.layer1[0].bn2.weight, torch.ones(16))


def test_slim_frozen_stages_and_in_channels():
    model = ResNet(depth=18, base_channels=32, frozen_stages=1, in_channels=1).train()
    assert model.conv1.weight.shape == (32, 1, 7, 7)
    assert not model.conv1.weight.requires_grad and not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad
    assert ResNet(depth=18, base_channels=32, num_stages=2, out_indices=(1,))(torch.rand(1, 3, 32, 32))[0].shape == (1, 64, 4, 4)


@pytest.mark.parametrize("kwargs", [{"base_channels": 0}, {"base_channels": 32, "stem_channels": 1}])
def test_bad_widths(kwargs):
    with pytest.raises(ConfigError, match="base_channels"):
        ResNet(depth=18, **kwargs)
