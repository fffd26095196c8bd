import pytest
import torch

from detcli.models.priors import AnchorGenerator, MlvlPointGenerator

DOC_LEVEL0 = torch.tensor([[-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5],
                           [-4.5, 11.5, 4.5, 20.5], [11.5, 11.5, 20.5, 20.5]])


def test_anchor_doc_example_one_level():
    anchors = AnchorGenerator([16], [1.0], [1.0], [9]).grid_priors([(2, 2)], device="cpu")
    assert len(anchors) == 1
    torch.testing.assert_close(anchors[0], DOC_LEVEL0)


def test_anchor_doc_example_two_levels():
    anchors = AnchorGenerator([16, 32], [1.0], [1.0], [9, 18]).grid_priors([(2, 2), (1, 1)], device="cpu")
    torch.testing.assert_close(anchors[0], DOC_LEVEL0)
    torch.testing.assert_close(anchors[1], torch.tensor([[-9.0, -9.0, 9.0, 9.0]]))


def test_retinanet_base_anchors_stride8():
    gen = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)
    expected = torch.tensor([
        [-22.6274, -11.3137, 22.6274, 11.3137], [-28.5088, -14.2544, 28.5088, 14.2544],
        [-35.9188, -17.9594, 35.9188, 17.9594], [-16, -16, 16, 16], [-20.1587, -20.1587, 20.1587, 20.1587],
        [-25.3984, -25.3984, 25.3984, 25.3984], [-11.3137, -22.6274, 11.3137, 22.6274],
        [-14.2544, -28.5088, 14.2544, 28.5088], [-17.9594, -35.9188, 17.9594, 35.9188]])
    torch.testing.assert_close(gen.base_anchors[0], expected, atol=1e-4, rtol=0)
    assert gen.num_base_priors == [9] * 5


def test_rpn_base_anchors_and_ordering():
    gen = AnchorGenerator(strides=[4], ratios=[0.5, 1.0, 2.0], scales=[8])
    expected = torch.tensor([[-22.6274, -11.3137, 22.6274, 11.3137], [-16, -16, 16, 16],
                             [-11.3137, -22.6274, 11.3137, 22.6274]])
    torch.testing.assert_close(gen.base_anchors[0], expected, atol=1e-4, rtol=0)
    # index = (y * W + x) * A + a
    anchors = gen.grid_priors([(2, 3)])[0]
    assert anchors.shape == (2 * 3 * 3, 4)
    y, x, a = 1, 2, 1
    torch.testing.assert_close(anchors[(y * 3 + x) * 3 + a], expected[a] + torch.tensor([8.0, 4.0, 8.0, 4.0]))


def test_anchor_generator_bad_arguments():
    with pytest.raises(ValueError, match="scales"):
        AnchorGenerator([8], [1.0])
    with pytest.raises(ValueError, match="not both"):
        AnchorGenerator([8], [1.0], scales=[1.0], octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValueError, match="2 feature maps"):
        AnchorGenerator([8], [1.0], [1.0]).grid_priors([(2, 2), (1, 1)])


def test_valid_flags():
    gen = AnchorGenerator([16], [1.0, 2.0], [1.0])
    flags = gen.valid_flags([(4, 4)], (33, 20))[0]  # valid region ceil(33/16)=3 rows, ceil(20/16)=2 cols
    assert flags.shape == (4 * 4 * 2,)
    grid = flags.view(4, 4, 2)
    assert grid[:3, :2].all() and not grid[3].any() and not grid[:, 2:].any()


def test_empty_feature_map():
    anchors = AnchorGenerator([8], [1.0], [1.0]).grid_priors([(0, 5)])[0]
    assert anchors.shape == (0, 4)


def test_point_generator():
    gen = MlvlPointGenerator([16])
    torch.testing.assert_close(gen.grid_priors([(2, 2)])[0], torch.tensor([[8.0, 8], [24, 8], [8, 24], [24, 24]]))
    with_stride = gen.grid_priors([(2, 2)], with_stride=True)[0]
    torch.testing.assert_close(with_stride[:2], torch.tensor([[8.0, 8, 16, 16], [24, 8, 16, 16]]))
    pts = MlvlPointGenerator([8], offset=0).grid_priors([(2, 3)])[0]
    torch.testing.assert_close(pts, torch.tensor([[0.0, 0], [8, 0], [16, 0], [0, 8], [8, 8], [16, 8]]))


# ---------------------------------------------------------------- TorchvisionAnchorGenerator

from detcli.models.priors import TorchvisionAnchorGenerator  # noqa: E402

TV_RETINA_SIZES = [[x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))] for x in (32, 64, 128, 256, 512)]


def _torchvision_anchors(sizes, ratios, pad_shape, featmap_sizes, dtype=torch.float32):
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    tv = TvAnchorGenerator(tuple(tuple(s) for s in sizes), ratios)
    images = ImageList(torch.zeros((1, 3, *pad_shape), dtype=dtype), [tuple(pad_shape)])
    feats = [torch.zeros((1, 1, h, w), dtype=dtype) for h, w in featmap_sizes]
    return tv(images, feats)[0], tv.num_anchors_per_location()


@pytest.mark.parametrize("pad_shape", [(128, 160), (800, 1216), (96, 32), (37, 53)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchvision_anchors_equal_torchvision_retinanet(pad_shape, dtype):
    # P3..P7 sizes as torchvision's ResNet-FPN gives them (stride-2 convs: ceil halving)
    h, w = pad_shape
    featmap_sizes = []
    for level in range(3, 8):
        featmap_sizes.append((-(-h // 2 ** level), -(-w // 2 ** level)))
    ratios = ((0.5, 1.0, 2.0),) * 5
    expected, num_per_location = _torchvision_anchors(TV_RETINA_SIZES, ratios, pad_shape, featmap_sizes, dtype)
    gen = TorchvisionAnchorGenerator(TV_RETINA_SIZES, [0.5, 1.0, 2.0], [8, 16, 32, 64, 128])
    got = gen.grid_priors(featmap_sizes, dtype=dtype, pad_shape=pad_shape)
    assert gen.num_base_priors == num_per_location == [9] * 5
    assert got[0].dtype == dtype
    torch.testing.assert_close(torch.cat(got), expected, rtol=0, atol=0)


def test_torchvision_anchors_one_level_non_square_per_level_ratios():
    sizes, ratios = [[20, 45]], [[0.25, 1.0, 3.0]]
    expected, _ = _torchvision_anchors(sizes, tuple(tuple(r) for r in ratios), (40, 90), [(3, 7)])
    gen = TorchvisionAnchorGenerator(sizes, ratios, [16])
    got = gen.grid_priors([(3, 7)], pad_shape=(40, 90))
    torch.testing.assert_close(got[0], expected, rtol=0, atol=0)
    # strides 90 // 7 = 12 along x, 40 // 3 = 13 along y; anchor index (y * W + x) * A + a, ratio-major
    assert gen.level_strides([(3, 7)], (40, 90)) == [(12.0, 13.0)]
    a = 1 * 2 + 1  # ratio 1.0, size 45
    torch.testing.assert_close(got[0][(2 * 7 + 5) * 6 + a], torch.tensor([60.0 - 22, 26.0 - 22, 60.0 + 22, 26.0 + 22]))


def test_torchvision_anchors_rounding_and_nominal_strides():
    gen = TorchvisionAnchorGenerator([[32]], [0.5, 1.0], [8])
    # w = 32 / sqrt(0.5) = 45.25 -> half 22.6 -> 23; h = 22.6 -> half 11.3 -> 11
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0]]))
    nominal = gen.grid_priors([(1, 2)])[0]  # no pad shape: the nominal stride 8, no offset
    torch.testing.assert_close(nominal[2], torch.tensor([-15.0, -11.0, 31.0, 11.0]))
    fixed = TorchvisionAnchorGenerator([[32]], [1.0], [8], image_strides=False)
    assert not fixed.uses_pad_shape
    torch.testing.assert_close(fixed.grid_priors([(1, 2)], pad_shape=(100, 100))[0][1],
                               torch.tensor([-8.0, -16.0, 24.0, 16.0]))


def test_torchvision_anchors_empty_map_valid_flags_and_errors():
    gen = TorchvisionAnchorGenerator([[8], [16]], [1.0], [8, 16])
    got = gen.grid_priors([(0, 3), (1, 1)], pad_shape=(8, 24))
    assert got[0].shape == (0, 4) and got[1].shape == (1, 4)
    flags = gen.valid_flags([(2, 3), (1, 1)], (5, 5))
    assert [f.shape[0] for f in flags] == [6, 1] and all(bool(f.all()) for f in flags)
    with pytest.raises(ValueError, match="2 strides"):
        TorchvisionAnchorGenerator([[8]], [1.0], [8, 16])
    with pytest.raises(ValueError, match="aspect_ratios has 1 levels"):
        TorchvisionAnchorGenerator([[8], [16]], [[1.0]], [8, 16])
    with pytest.raises(ValueError, match="positive"):
        TorchvisionAnchorGenerator([[8]], [0.0], [8])
    with pytest.raises(ValueError, match="1 feature maps"):
        gen.grid_priors([(1, 1)])
