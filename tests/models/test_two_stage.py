"""RPN proposals and losses, RoI sampling, and the Faster R-CNN contract including the empty cases."""

import dataclasses

import numpy as np
import pytest
import torch

import detcli.models
from detcli.errors import ConfigError
from detcli.models.priors import AnchorGenerator
from detcli.models.roi_head import RCNNTrainConfig, boxes_to_rois
from detcli.models.rpn import ProposalConfig, RPNHead, RPNTrainConfig
from detcli.models.samplers import RandomSampler
from detcli.registry import DETECTORS, build
from detcli.structures import Boxes, GroundTruth, ImageBatch
from detcli.structures.masks import BitmapMasks


def _rpn(strides=(16,)):
    return RPNHead(4, feat_channels=4, anchor_generator=AnchorGenerator(strides=list(strides), ratios=[1.0], scales=[2]))


def _images(*sizes, pad=64):
    return ImageBatch(torch.zeros(len(sizes), 3, pad, pad), list(sizes))


def _gt(size, boxes=(), labels=()):
    return GroundTruth(size, Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                       torch.tensor(labels, dtype=torch.long))


def test_proposals_topk_sorted_clipped_and_capped():
    rpn = _rpn()
    logits = torch.arange(16.0).reshape(1, 1, 4, 4)  # anchor 15 (bottom-right) scores highest
    deltas = torch.zeros(1, 4, 4, 4)
    (boxes, scores), = rpn.get_proposals([logits], [deltas], _images((64, 64)), ProposalConfig(nms_pre=5, max_per_img=3))
    assert scores.tolist() == pytest.approx(torch.tensor([15.0, 14, 13]).sigmoid().tolist())
    # anchors are 32x32 centred on the cell corners: (48, 48) +- 16 for the last one, clipped to 64
    assert boxes.tolist() == [[32.0, 32, 64, 64], [16, 32, 48, 64], [0, 32, 32, 64]]


def test_proposals_min_bbox_size_and_all_filtered():
    rpn = _rpn()
    logits, deltas = torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, 4)
    (boxes, _), = rpn.get_proposals([logits], [deltas], _images((64, 64)), ProposalConfig(min_bbox_size=16))
    # border anchors are clipped to 16 px sides and dropped (side <= 16); the 3x3 interior stays
    assert boxes.shape == (9, 4) and bool(((boxes[:, 2:] - boxes[:, :2]) == 32).all())
    props = rpn.get_proposals([torch.zeros(2, 1, 4, 4)], [torch.zeros(2, 4, 4, 4)], _images((64, 64), (32, 48)),
                              ProposalConfig(min_bbox_size=100))
    assert [p[0].shape for p in props] == [(0, 4), (0, 4)] and [p[1].shape for p in props] == [(0,), (0,)]


def test_proposals_nms_within_each_level_and_per_image_clip():
    rpn = _rpn(strides=(16, 16))  # two levels with identical anchors
    logits, deltas = torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, 4)
    props = rpn.get_proposals([logits, logits], [deltas, deltas], _images((64, 64), (40, 30)), ProposalConfig())
    assert len(props[0][0]) == 32  # adjacent anchors overlap 1/3 < 0.7 and levels never suppress each other
    assert float(props[1][0][:, 2].max()) == 30 and float(props[1][0][:, 3].max()) == 40


def test_rpn_loss_with_and_without_gt():
    torch.manual_seed(0)
    rpn = _rpn()
    torch.nn.init.zeros_(rpn.rpn_cls.weight)
    feats = (torch.randn(2, 4, 4, 4),)
    cls, reg = rpn(feats)
    cfg = RPNTrainConfig.parse({}, "rpn")
    losses = rpn.loss(cls, reg, _images((64, 64), (64, 64)), [_gt((64, 64), [[0, 0, 30, 30]], [0]), _gt((64, 64), [[20, 20, 50, 40]], [1])], cfg)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"}
    # every logit is 0: BCE ln 2 averaged over the sampled anchors
    assert losses["loss_rpn_cls"].item() == pytest.approx(torch.tensor(2.0).log().item())
    assert losses["loss_rpn_bbox"].item() > 0
    losses = rpn.loss(cls, reg, _images((64, 64), (64, 64)), [_gt((64, 64)), _gt((64, 64))], cfg)
    assert losses["loss_rpn_bbox"].item() == 0
    # 16 negatives per image, divided by max(P, 1) + max(Q, 1) = 17 per image (mmdet's num_total_samples)
    assert losses["loss_rpn_cls"].item() == pytest.approx(torch.tensor(2.0).log().item() * 32 / 34)
    losses["loss_rpn_bbox"].backward()


def test_sample_prepends_gt_and_respects_the_sampler(faster_rcnn_cfg):
    model = build(faster_rcnn_cfg(), DETECTORS, path="model")
    cfg = dataclasses.replace(model.rcnn_train, sampler=RandomSampler(8, 0.5, add_gt_as_proposals=True))
    proposals = [torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [30, 30, 40, 40], [31, 30, 41, 40]]),
                 torch.zeros(0, 4)]
    targets = [_gt((64, 64), [[0, 0, 10, 11], [30, 30, 40, 40]], [2, 1]), _gt((64, 64), [[5, 5, 25, 25]], [3])]
    s = model.roi_head.sample(proposals, targets, cfg)
    img = s.rois[:, 0].long()
    assert img.tolist() == sorted(img.tolist())  # grouped by image
    # image 0: positives are the 2 GT + 3 matching proposals, at most 4 drawn; 1 negative
    assert int(s.pos[img == 0].sum()) == 4 and int((~s.pos[img == 0]).sum()) == 1
    # image 1 has no proposals: its GT box alone, as a positive of class 3
    assert s.rois[img == 1].tolist() == [[1.0, 5, 5, 25, 25]] and s.labels[img == 1].tolist() == [3]
    pos0 = s.pos & (img == 0)
    assert set(s.labels[pos0].tolist()) <= {1, 2} and bool((s.labels[~s.pos] == 4).all())
    assert torch.equal(s.gt_boxes[pos0], targets[0].boxes.tensor[s.gt_index[pos0]])
    none = model.roi_head.sample([torch.zeros(0, 4)], [_gt((64, 64))], cfg)
    assert none.rois.shape == (0, 5) and none.labels.shape == (0,)


def test_boxes_to_rois():
    rois = boxes_to_rois([torch.tensor([[1.0, 2, 3, 4]]), torch.zeros(0, 4), torch.tensor([[5.0, 6, 7, 8]])])
    assert rois.tolist() == [[0.0, 1, 2, 3, 4], [2, 5, 6, 7, 8]]


def _batch():
    g = torch.Generator().manual_seed(0)
    images = ImageBatch.from_tensors([torch.randn(3, 96, 128, generator=g), torch.randn(3, 64, 80, generator=g)])
    targets = [_gt((96, 128), [[10, 10, 60, 70], [50, 40, 120, 90]], [1, 3]), _gt((64, 80))]
    return images, targets


def _check_dets(dets, images, max_per_img):
    for d, size in zip(dets, images.image_sizes):
        assert d.image_size == size and len(d) <= max_per_img and d.masks is None
        b = d.boxes.tensor
        assert bool((b[:, 2] <= size[1]).all()) and bool((b[:, 3] <= size[0]).all()) and bool((b >= 0).all())
        assert bool((d.scores[:-1] >= d.scores[1:]).all())


def test_faster_rcnn_trains_and_predicts(faster_rcnn_cfg):
    torch.manual_seed(0)
    model = build(faster_rcnn_cfg(), DETECTORS, path="model")
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc"}
    assert losses["loss_cls"].item() == pytest.approx(torch.tensor(5.0).log().item(), abs=0.05)  # 4 classes + bg
    sum(v for k, v in losses.items() if "loss" in k).backward()
    grads = [p.grad for p in model.roi_head.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    model.eval()
    model.rcnn_test = dataclasses.replace(model.rcnn_test, score_thr=0.0, max_per_img=7)
    dets = model(images)
    assert [len(d) for d in dets] == [7, 7]
    _check_dets(dets, images, 7)
    assert model.num_classes == 4


def test_faster_rcnn_empty_cases(faster_rcnn_cfg):
    torch.manual_seed(0)
    model = build(faster_rcnn_cfg(), DETECTORS, path="model")
    images, targets = _batch()
    model.train()
    # every proposal filtered: the RoI head trains on the GT boxes alone
    model.rpn_proposal = dataclasses.replace(model.rpn_proposal, min_bbox_size=1e5)
    torch.nn.init.zeros_(model.roi_head.bbox_head.fc_reg.weight)
    losses = model(images, targets)
    assert losses["loss_bbox"].item() == 0  # GT boxes regress to themselves
    sum(v for k, v in losses.items() if "loss" in k).backward()
    # ... and without any GT there are no RoIs at all
    no_gt = [_gt((96, 128)), _gt((64, 80))]
    losses = model(images, no_gt)
    assert losses["loss_cls"].item() == 0 and losses["loss_bbox"].item() == 0
    sum(v for k, v in losses.items() if "loss" in k).backward()
    model.eval()
    model.rpn_test = dataclasses.replace(model.rpn_test, min_bbox_size=1e5)
    for d in model(images):
        assert d.boxes.tensor.shape == (0, 4) and d.scores.shape == (0,) and d.labels.shape == (0,)
    # nothing above the score threshold
    model.rpn_test = dataclasses.replace(model.rpn_test, min_bbox_size=0)
    model.rcnn_test = dataclasses.replace(model.rcnn_test, score_thr=1.0)
    assert [len(d) for d in model(images)] == [0, 0]


def test_config_errors(faster_rcnn_cfg):
    cfg = faster_rcnn_cfg()
    cfg["train_cfg"]["rpn"]["asigner"] = cfg["train_cfg"]["rpn"].pop("assigner")
    with pytest.raises(ConfigError, match=r"model.train_cfg.rpn.asigner: .*did you mean 'assigner'"):
        build(cfg, DETECTORS, path="model")
    cfg = faster_rcnn_cfg()
    cfg["test_cfg"]["rcnn"]["max_per_image"] = 5
    with pytest.raises(ConfigError, match="did you mean 'max_per_img'"):
        build(cfg, DETECTORS, path="model")
    cfg = faster_rcnn_cfg()
    cfg["train_cfg"]["rcnn_proposal"] = {}
    with pytest.raises(ConfigError, match="model.train_cfg.rcnn_proposal"):
        build(cfg, DETECTORS, path="model")
    with pytest.raises(ConfigError, match="sigmoid"):
        RPNHead(4, loss_cls=build({"type": "CrossEntropyLoss"}, detcli.registry.LOSSES))
    assert RCNNTrainConfig.parse({}, "x").sampler.num == 512


def _masked(gt):
    h, w = gt.image_size
    masks = np.zeros((len(gt), h, w), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(gt.boxes.tensor.int().tolist()):
        masks[k, y1:y2, x1:x2] = 1
    return GroundTruth(gt.image_size, gt.boxes, gt.labels, masks=BitmapMasks(masks, h, w))


def test_mask_rcnn_trains_and_predicts_masks(mask_rcnn_cfg):
    torch.manual_seed(0)
    model = build(mask_rcnn_cfg(), DETECTORS, path="model")
    images, targets = _batch()
    targets = [_masked(t) for t in targets]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc", "loss_mask"}
    assert losses["loss_mask"].item() > 0
    sum(v for k, v in losses.items() if "loss" in k).backward()
    assert model.roi_head.mask_head.conv_logits.weight.grad.abs().sum() > 0
    model.eval()
    model.rcnn_test = dataclasses.replace(model.rcnn_test, score_thr=0.0, max_per_img=5)
    dets = model(images)
    for d, (h, w) in zip(dets, images.image_sizes):
        assert len(d) == 5 and d.masks.shape == (5, h, w) and d.masks.dtype == torch.bool
        # masks are pasted inside their (slightly enlarged) boxes only
        _, xs = torch.nonzero(d.masks.any(0), as_tuple=True)
        if len(xs):
            assert int(xs.min()) >= int(d.boxes.tensor[:, 0].min()) - 1


def test_mask_rcnn_empty_cases(mask_rcnn_cfg):
    torch.manual_seed(0)
    model = build(mask_rcnn_cfg(), DETECTORS, path="model")
    images, targets = _batch()
    model.train()
    # images without GT (so without positives): zero mask loss, still part of the graph
    losses = model(images, [_gt((96, 128)), _gt((64, 80))])
    assert losses["loss_mask"].item() == 0 and losses["loss_mask"].requires_grad
    sum(v for k, v in losses.items() if "loss" in k).backward()
    model.eval()
    model.rpn_test = dataclasses.replace(model.rpn_test, min_bbox_size=1e5)  # no proposal at all
    for d, (h, w) in zip(model(images), images.image_sizes):
        assert d.boxes.tensor.shape == (0, 4) and d.scores.shape == (0,) and d.labels.shape == (0,)
        assert d.masks.shape == (0, h, w) and d.masks.dtype == torch.bool
    # zero proposals for one image only: image 1 is 2x2 px, so its clipped proposals are all <= 3 px
    tiny_second = ImageBatch(images.tensor, [(96, 128), (2, 2)])
    model.rpn_test = dataclasses.replace(model.rpn_test, min_bbox_size=3)
    model.rcnn_test = dataclasses.replace(model.rcnn_test, score_thr=0.0, max_per_img=3)
    first, second = model(tiny_second)
    assert len(first) == 3 and first.masks.shape == (3, 96, 128)
    assert len(second) == 0 and second.masks.shape == (0, 2, 2)
    model.train()
    model.rpn_proposal = dataclasses.replace(model.rpn_proposal, min_bbox_size=3)
    losses = model(tiny_second, [_masked(targets[0]), _gt((2, 2))])
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(v for k, v in losses.items() if "loss" in k).backward()


def test_mask_rcnn_needs_masks_and_faster_rcnn_refuses_them(mask_rcnn_cfg, faster_rcnn_cfg):
    model = build(mask_rcnn_cfg(), DETECTORS, path="model")
    images, targets = _batch()
    with pytest.raises(ConfigError, match="with_mask"):
        model(images, targets)
    cfg = mask_rcnn_cfg()
    cfg["type"] = "FasterRCNN"
    with pytest.raises(ConfigError, match="MaskRCNN"):
        build(cfg, DETECTORS, path="model")
    cfg = faster_rcnn_cfg()
    cfg["type"] = "MaskRCNN"
    with pytest.raises(ConfigError, match="mask_head"):
        build(cfg, DETECTORS, path="model")


def test_onnx_export_accepts_two_stage_at_opset_16(faster_rcnn_cfg):
    from detcli.models.deploy import check_exportable, deploy_model, min_opset
    from detcli.models.deploy_two_stage import DeployTwoStage

    model = build(faster_rcnn_cfg(), DETECTORS, path="model")
    check_exportable(model)
    assert min_opset(model) == 16 and isinstance(deploy_model(model), DeployTwoStage)
    with pytest.raises(ConfigError, match="--skip-postprocess: FasterRCNN"):
        deploy_model(model, postprocess=False)

