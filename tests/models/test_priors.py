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
