"""SingleRoIExtractor: finest_scale level mapping and pooling from the mapped level."""

import pytest
import torch

from detcli.errors import ConfigError
from detcli.models.roi_extractors import SingleRoIExtractor
from detcli.ops import roi_align

LAYER = {"type": "RoIAlign", "output_size": 7, "sampling_ratio": 0}


def _rois(sides):
    return torch.tensor([[0.0, 0.0, 0.0, s, s] for s in sides])


def test_map_roi_levels_thresholds():
    ext = SingleRoIExtractor(LAYER, 8, [4, 8, 16, 32])
    levels = ext.map_roi_levels(_rois([32, 111, 112, 224, 448, 1000]), 4)
    assert levels.tolist() == [0, 0, 1, 2, 3, 3]
    assert ext.map_roi_levels(_rois([1000]), 2).tolist() == [1]
    assert ext.map_roi_levels(_rois([0]), 4).tolist() == [0]  # empty box: level 0


def test_pools_each_roi_from_its_level():
    ext = SingleRoIExtractor(LAYER, 3, [4, 8, 16, 32])
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)] + [torch.randn(2, 3, 2, 2)]
    rois = torch.tensor([[1.0, 4, 4, 250, 250], [0, 10, 10, 40, 40], [1, 0, 0, 120, 100], [0, 0, 0, 200, 150]])
    out = ext(feats, rois)
    assert out.shape == (4, 3, 7, 7)
    for k, level in enumerate(ext.map_roi_levels(rois, 4).tolist()):
        expect = roi_align(feats[level], rois[k:k + 1], 7, 1 / 2 ** (level + 2), 0, True)
        torch.testing.assert_close(out[k:k + 1], expect)
    assert ext(feats, torch.zeros(0, 5)).shape == (0, 3, 7, 7)


def test_output_size_14_and_bad_layer():
    ext = SingleRoIExtractor({"type": "RoIAlign", "output_size": 14, "sampling_ratio": 0, "aligned": True}, 2, [4])
    assert ext([torch.ones(1, 2, 16, 16)], torch.tensor([[0.0, 8, 8, 40, 40]])).shape == (1, 2, 14, 14)
    with pytest.raises(ConfigError, match="RoIPool"):
        SingleRoIExtractor({"type": "RoIPool", "output_size": 7}, 2, [4])
    with pytest.raises(ConfigError, match="did you mean 'output_size'"):
        SingleRoIExtractor({"type": "RoIAlign", "out_size": 7}, 2, [4])
