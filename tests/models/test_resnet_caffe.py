"""ResNet ``style: caffe``: the stride of a downsampling Bottleneck sits on its 1x1 conv1 (mmdet 2.x)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.errors import ConfigError
from detcli.models.backbones.resnet import ResNet
from detcli.models.fuse import fuse_conv_bn


def randomize_bn_(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so a wrong stride cannot hide."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def caffe_reference(model: ResNet, x: Tensor) -> list[Tensor]:
    """The caffe-style forward written out with ``F.conv2d``: stride on conv1 (1x1), none on conv2 (3x3)."""

    def bn(m: nn.BatchNorm2d, t: Tensor) -> Tensor:
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    x = F.max_pool2d(F.relu(bn(model.bn1, F.conv2d(x, model.conv1.weight, stride=2, padding=3))), 3, 2, 1)
    outs = []
    for stage, name in enumerate(model.stage_names):
        for i, block in enumerate(getattr(model, name)):
            stride = 2 if stage > 0 and i == 0 else 1
            out = F.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight, stride=stride)))  # stride here (caffe)
            out = F.relu(bn(block.bn2, F.conv2d(out, block.conv2.weight, stride=1, padding=1)))
            out = bn(block.bn3, F.conv2d(out, block.conv3.weight))
            identity = x
            if block.downsample is not None:
                identity = bn(block.downsample[1], F.conv2d(x, block.downsample[0].weight, stride=stride))
            x = F.relu(out + identity)
        outs.append(x)
    return outs


def test_caffe_strides_sit_on_conv1_of_downsampling_bottlenecks() -> None:
    caffe, pytorch = ResNet(depth=50, style="caffe"), ResNet(depth=50, style="pytorch")
    assert caffe.style == "caffe" and pytorch.style == "pytorch"
    for name in ("layer2", "layer3", "layer4"):
        first = getattr(caffe, name)[0]
        assert (first.conv1.stride, first.conv2.stride) == ((2, 2), (1, 1))
        assert first.conv2.padding == (1, 1) and first.downsample[0].stride == (2, 2)
        ref = getattr(pytorch, name)[0]
        assert (ref.conv1.stride, ref.conv2.stride) == ((1, 1), (2, 2))
    assert all(b.conv1.stride == (1, 1) and b.conv2.stride == (1, 1) for b in caffe.layer1)
    assert all(b.conv1.stride == (1, 1) for b in list(caffe.layer3)[1:])


@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_caffe_output_shapes_equal_pytorch_style(size: tuple[int, int]) -> None:
    x = torch.rand(1, 3, *size)
    caffe = ResNet(depth=50, style="caffe").eval()
    pytorch = ResNet(depth=50, style="pytorch").eval()
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in caffe(x)]
        assert shapes == [tuple(o.shape) for o in pytorch(x)]
    def half(n: int) -> int:  # a stride-2 conv or pool of det's ResNet: ceil(n / 2)
        return -(-n // 2)

    h, w = half(half(size[0])), half(half(size[1]))  # stem: conv1 and max-pool
    expected = [(1, 256, h, w)]
    for channels in (512, 1024, 2048):
        h, w = half(h), half(w)
        expected.append((1, channels, h, w))
    assert shapes == expected


def test_caffe_values_equal_hand_built_reference_and_differ_from_pytorch() -> None:
    torch.manual_seed(0)
    caffe = randomize_bn_(ResNet(depth=50, style="caffe", zero_init_residual=False)).eval()
    pytorch = ResNet(depth=50, style="pytorch").eval()
    pytorch.load_state_dict(caffe.state_dict())  # same names, same shapes
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        outs = caffe(x)
        ref = caffe_reference(caffe, x)
        for out, expected in zip(outs, ref, strict=True):
            torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        assert torch.equal(outs[0], pytorch(x)[0])  # layer1 does not downsample: same in both styles
        assert not torch.allclose(outs[1], pytorch(x)[1], atol=1e-3)


def test_basicblock_resnets_are_the_same_in_both_styles() -> None:
    caffe = randomize_bn_(ResNet(depth=18, style="caffe", zero_init_residual=False)).eval()
    pytorch = ResNet(depth=18, style="pytorch").eval()
    pytorch.load_state_dict(caffe.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(caffe(x), pytorch(x), strict=True):
            assert torch.equal(a, b)


def test_caffe_checkpoint_names_match_mmdet_and_load_strictly() -> None:
    caffe = ResNet(depth=50, style="caffe")
    keys = list(caffe.state_dict())
    assert keys == list(ResNet(depth=50, style="pytorch").state_dict())
    # mmdet's caffe ResNet-50 (open-mmlab://detectron2/resnet50_caffe) names
    for name in ("conv1.weight", "bn1.running_var", "layer2.0.conv1.weight", "layer2.0.downsample.0.weight",
                 "layer2.0.downsample.1.bias", "layer4.2.bn3.weight"):
        assert name in keys
    assert caffe.load_state_dict(ResNet(depth=50, style="pytorch").state_dict(), strict=True)


def test_fused_caffe_resnet_keeps_strides_and_values() -> None:
    model = randomize_bn_(ResNet(depth=50, style="caffe", zero_init_residual=False)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        assert fuse_conv_bn(model) == 53  # stem + 16 blocks x 3 + 4 downsample branches
        assert (model.layer3[0].conv1.stride, model.layer3[0].conv2.stride) == ((2, 2), (1, 1))
        for out, ref in zip(model(x), expected, strict=True):
            torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)  # float32 rounding over 50 layers


def test_unknown_style_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"style 'tensorflow' is not supported \(choose from pytorch, caffe\)"):
        ResNet(depth=50, style="tensorflow")
