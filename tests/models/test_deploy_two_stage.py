"""The traceable pieces of the two-stage export graph match the PyTorch path (no ONNX needed)."""

import torch

from detcli.models.deploy_two_stage import _roi_features
from detcli.models.mask_heads import axis_weights, paste_masks
from detcli.models.roi_extractors import SingleRoIExtractor


def test_matmul_paste_equals_paste_masks():
    torch.manual_seed(0)
    probs = torch.rand(5, 28, 28)
    boxes = torch.tensor([[3.0, 4, 40, 30], [0, 0, 64, 48], [10.5, 20.25, 11, 21], [50, 40, 64, 48], [-5, -5, 20, 10]])
    h, w = 48, 64
    wy = axis_weights(boxes[:, 1], boxes[:, 3], torch.arange(h, dtype=torch.float32), 28)
    wx = axis_weights(boxes[:, 0], boxes[:, 2], torch.arange(w, dtype=torch.float32), 28)
    pasted = wy @ probs @ wx.transpose(1, 2)
    torch.testing.assert_close(pasted, paste_masks(probs, boxes, (h, w), threshold=-1), atol=1e-5, rtol=0)
    assert torch.equal(pasted >= 0.5, paste_masks(probs, boxes, (h, w), threshold=0.5))


def test_roi_features_by_level_equal_the_extractor():
    torch.manual_seed(0)
    ext = SingleRoIExtractor({"type": "RoIAlign", "output_size": 7, "sampling_ratio": 0}, 8, [4, 8, 16, 32],
                             finest_scale=8)
    feats = [torch.randn(2, 8, 64 // 2**i, 64 // 2**i) for i in range(4)]
    # scales 4, 16, 40, 200: levels 0, 1, 2, 3 with finest_scale 8; level 2 gets no RoI of image 0
    boxes = torch.tensor([[0.0, 0, 4, 4], [8, 8, 24, 24], [0, 0, 40, 40], [0, 0, 200, 200], [30, 10, 34, 14]])
    batch = torch.tensor([0.0, 1, 1, 0, 1])
    got = _roi_features(ext, tuple(feats), batch, boxes)
    ref = ext(feats, torch.cat([batch[:, None], boxes], dim=1))
    torch.testing.assert_close(got, ref)
    assert _roi_features(ext, tuple(feats), batch[:0], boxes[:0]).shape == (0, 8, 7, 7)
