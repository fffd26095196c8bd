import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detcli.errors import ConfigError
from detcli.models.losses import CrossEntropyLoss
from detcli.models.mask_heads import FCNMaskHead, paste_masks
from detcli.registry import HEADS, build
from detcli.structures.masks import BitmapMasks, PolygonMasks


def _head(**kw):
    cfg = {"num_convs": 1, "roi_feat_size": 6, "in_channels": 4, "conv_out_channels": 8, "num_classes": 3, **kw}
    return FCNMaskHead(**cfg)


def _square_masks(kind):
    """One 32x32 image with a square mask covering pixels [8, 16) x [8, 16)."""
    if kind == "bitmap":
        m = np.zeros((1, 32, 32), np.uint8)
        m[0, 8:16, 8:16] = 1
        return BitmapMasks(m, 32, 32)
    return PolygonMasks([[np.array([8, 8, 16, 8, 16, 16, 8, 16], float)]], 32, 32)


def _grid_sample_paste(probs, boxes, h, w):
    """Reference: grid_sample over the whole image (mmdet's semantics, no window)."""
    n = probs.shape[0]
    x0, y0, x1, y1 = boxes.unbind(1)
    gy = (torch.arange(h) + 0.5 - y0[:, None]) / (y1 - y0)[:, None] * 2 - 1
    gx = (torch.arange(w) + 0.5 - x0[:, None]) / (x1 - x0)[:, None] * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], 3)
    return F.grid_sample(probs[:, None], grid, align_corners=False)[:, 0]


def test_default_is_mask_rcnn_head():
    head = FCNMaskHead()
    assert len(head.convs) == 4 and head.mask_size == 28
    assert isinstance(head.upsample, torch.nn.ConvTranspose2d)
    assert isinstance(head.loss_mask, CrossEntropyLoss) and head.loss_mask.use_mask
    out = head(torch.zeros(2, 256, 14, 14))
    assert out.shape == (2, 80, 28, 28)


def test_built_from_config():
    head = build({"type": "FCNMaskHead", "num_classes": 2, "in_channels": 8, "conv_out_channels": 8,
                  "loss_mask": {"type": "CrossEntropyLoss", "use_mask": True, "loss_weight": 2.0}}, HEADS)
    assert head.loss_mask.loss_weight == 2.0
    assert head(torch.zeros(1, 8, 14, 14)).shape == (1, 2, 28, 28)


@pytest.mark.parametrize("kind, channels", [("nearest", 8), ("bilinear", 8), (None, 8)])
def test_upsample_variants(kind, channels):
    head = _head(upsample_cfg={"type": kind, "scale_factor": 2})
    expected = 12 if kind else 6
    assert head.mask_size == expected
    assert head(torch.randn(2, 4, 6, 6)).shape == (2, 3, expected, expected)
    assert head.conv_logits.in_channels == channels


def test_bad_configs():
    with pytest.raises(ConfigError, match="upsample_cfg.type"):
        _head(upsample_cfg={"type": "carafe"})
    with pytest.raises(ConfigError, match="init_cfg"):
        _head(init_cfg={"type": "Kaiming"})
    with pytest.raises(ConfigError, match="conv_cfg"):
        _head(conv_cfg={"type": "DCN"})
    with pytest.raises(ConfigError, match="unknown keys"):
        _head(upsample_cfg={"type": "deconv", "mode": "x"})


def test_init_is_kaiming_fan_out_with_zero_bias():
    head = FCNMaskHead(in_channels=256, num_classes=80)
    w = head.conv_logits.weight  # fan_out = 80 * 1 * 1: std sqrt(2 / 80)
    assert w.std().item() == pytest.approx((2 / 80) ** 0.5, rel=0.05)
    assert head.upsample.bias.abs().max().item() == 0.0
    conv = head.convs[0][0]
    assert conv.weight.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)


def test_class_agnostic_forward_and_predict():
    head = _head(class_agnostic=True)
    logits = head(torch.randn(3, 4, 6, 6))
    assert logits.shape == (3, 1, 12, 12)
    masks = head.predict(logits, torch.tensor([[0.0, 0, 10, 10]] * 3), torch.tensor([0, 2, 1]), (20, 30), 0.5)
    assert masks.shape == (3, 20, 30) and masks.dtype == torch.bool
    loss = head.loss(logits, torch.ones(3, 12, 12), torch.tensor([2, 2, 2]))["loss_mask"]
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], torch.ones(3, 12, 12))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_targets_by_hand(kind):
    head = _head()
    masks = _square_masks(kind)
    proposals = [torch.tensor([[8.0, 8, 16, 16], [4.0, 4, 20, 20], [16.0, 16, 32, 32]])]
    targets = head.get_targets(proposals, [torch.tensor([0, 0, 0])], [masks], 4)
    assert targets.shape == (3, 4, 4) and targets.dtype == torch.float32
    assert targets[0].eq(1).all()  # the proposal is the square
    ring = torch.tensor([0.0, 1, 1, 0])
    assert torch.equal(targets[1], ring[:, None] * ring[None, :])  # 4 px cells: [4,8) out, [8,16) in
    assert targets[2].eq(0).all()  # no overlap


def test_targets_several_images_and_empty():
    head = _head()
    two = BitmapMasks(np.stack([np.zeros((32, 32), np.uint8), np.ones((32, 32), np.uint8)]), 32, 32)
    props = [torch.zeros(0, 4), torch.tensor([[0.0, 0, 8, 8], [0.0, 0, 8, 8]])]
    inds = [torch.zeros(0, dtype=torch.long), torch.tensor([1, 0])]
    targets = head.get_targets(props, inds, [_square_masks("bitmap"), two], 28)
    assert targets.shape == (2, 28, 28)
    assert targets[0].eq(1).all() and targets[1].eq(0).all()
    none = head.get_targets([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], [two], 28)
    assert none.shape == (0, 28, 28)


def test_loss_on_label_channel():
    head = _head()
    logits = torch.zeros(2, 3, 12, 12)
    logits[0, 2] = 30.0
    logits[1, 0] = -30.0
    targets = torch.stack([torch.ones(12, 12), torch.zeros(12, 12)])
    assert head.loss(logits, targets, torch.tensor([2, 0]))["loss_mask"].item() == pytest.approx(0.0, abs=1e-6)
    assert head.loss(logits, targets, torch.tensor([1, 1]))["loss_mask"].item() == pytest.approx(np.log(2), abs=1e-6)


def test_empty_rois():
    head = _head()
    logits = head(torch.zeros(0, 4, 6, 6))
    assert logits.shape == (0, 3, 12, 12)
    loss = head.loss(logits, torch.zeros(0, 12, 12), torch.zeros(0, dtype=torch.long))["loss_mask"]
    assert loss.item() == 0.0
    loss.backward()
    assert head.conv_logits.weight.grad is not None
    masks = head.predict(logits, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (7, 9), 0.5)
    assert masks.shape == (0, 7, 9) and masks.dtype == torch.bool


def test_predict_constant_map_fills_the_box():
    head = _head()
    logits = torch.ones(2, 3, 12, 12)  # sigmoid(1) = 0.73 everywhere
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [3.3, 5.6, 17.2, 9.4]])
    masks = head.predict(logits, boxes, torch.tensor([0, 1]), (64, 64), 0.5)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
        ys, xs = mask.nonzero(as_tuple=True)
        assert ys.min() >= int(y0) and ys.max() < y1 and xs.min() >= int(x0) and xs.max() < x1  # inside
        assert mask[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1].all()  # all but a 1-pixel rim


def test_paste_equals_grid_sample_everywhere():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(25, 28, 28, generator=gen)
    corner = torch.rand(25, 2, generator=gen) * torch.tensor([80.0, 60.0]) - 10
    boxes = torch.cat([corner, corner + torch.rand(25, 2, generator=gen) * 50 + 0.5], 1)
    ref = _grid_sample_paste(probs, boxes, 60, 80)
    soft = paste_masks(probs, boxes, (60, 80), -1)
    assert soft.dtype == torch.float32
    assert (soft - ref).abs().max().item() < 1e-5
    assert torch.equal(paste_masks(probs, boxes, (60, 80), 0.5), ref >= 0.5)
    assert paste_masks(probs, boxes, (60, 80), 0.0).all()  # every probability is >= 0


def test_paste_chunks_agree(monkeypatch):
    from detcli.models import mask_heads

    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(9, 28, 28, generator=gen)
    boxes = torch.tensor([[i * 3.0, i * 2.0, i * 3.0 + 5 + 4 * i, i * 2.0 + 30] for i in range(9)])
    whole = paste_masks(probs, boxes, (50, 70), 0.5)
    monkeypatch.setattr(mask_heads, "PASTE_CHUNK_ELEMENTS", 400)  # one or two masks per chunk
    assert torch.equal(paste_masks(probs, boxes, (50, 70), 0.5), whole)
