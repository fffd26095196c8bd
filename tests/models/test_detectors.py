import copy

import pytest
import torch

from detcli.errors import ConfigError
from detcli.models import FCOS, FCOSHead, RetinaHead, RetinaNet
from detcli.models.detector import DenseTestConfig
from detcli.registry import DETECTORS, build
from detcli.structures import Detections, GroundTruth, ImageBatch

from .conftest import FCOS_R50, RETINANET_R50


def _batch():
    torch.manual_seed(0)
    images = ImageBatch(torch.randn(2, 3, 128, 128), [(128, 128), (100, 120)])
    targets = [
        GroundTruth((128, 128), torch.tensor([[10.0, 20, 70, 90], [60, 60, 120, 110]]), torch.tensor([1, 3])),
        GroundTruth((100, 120), torch.tensor([[5.0, 5, 40, 50]]), torch.tensor([0])),
    ]
    return images, targets


@pytest.fixture(params=["retinanet", "fcos"])
def model(request, retinanet_cfg, fcos_cfg):
    torch.manual_seed(0)
    cfg = retinanet_cfg() if request.param == "retinanet" else fcos_cfg()
    return build(cfg, DETECTORS, path="model")


def test_full_configs_build():
    for cfg, cls in ((RETINANET_R50, RetinaNet), (FCOS_R50, FCOS)):
        model = build(copy.deepcopy(cfg), DETECTORS, path="model")
        assert isinstance(model, cls) and model.num_classes == 80
    assert build(copy.deepcopy(RETINANET_R50), DETECTORS, dry_run=True) is None


def test_loss_keys_and_backward(model):
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    expected = {"loss_cls", "loss_bbox"} | ({"loss_centerness"} if isinstance(model, FCOS) else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_bbox"].item() > 0
    sum(losses.values()).backward()
    head = model.bbox_head
    grad = head.retina_reg.weight.grad if isinstance(head, RetinaHead) else head.conv_reg.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_no_ground_truth_batch(model):
    images, _ = _batch()
    empty = [GroundTruth(s, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)) for s in images.image_sizes]
    model.train()
    losses = model.loss(images, empty)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_bbox"].requires_grad
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()


def test_one_image_without_gt(model):
    images, targets = _batch()
    targets[1] = GroundTruth((100, 120), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    losses = model.train().loss(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_predict_contract(model):
    images, _ = _batch()
    model.eval()
    # make every candidate pass the threshold: many detections, clipped, sorted, capped
    model.test_settings = DenseTestConfig(nms_pre=50, score_thr=0.0, max_per_img=30, iou_threshold=0.5)
    dets = model(images)
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    for d, (h, w) in zip(dets, images.image_sizes):
        assert d.image_size == (h, w)
        assert 0 < len(d) <= 30
        assert torch.all(d.scores[:-1] >= d.scores[1:])
        b = d.boxes.tensor
        assert b[:, 0::2].min() >= 0 and b[:, 0::2].max() <= w and b[:, 1::2].min() >= 0 and b[:, 1::2].max() <= h
        assert d.labels.min() >= 0 and d.labels.max() < model.num_classes
        d.boxes.clip_((10, 10))  # results are ordinary tensors, modifiable in place


def test_predict_nothing_above_threshold(model):
    images, _ = _batch()
    dets = model.eval().predict(images)  # random init: p ~ 0.01 < 0.05
    assert [len(d) for d in dets] == [0, 0]


def test_ignore_boxes_reduce_negatives(retinanet_cfg):
    torch.manual_seed(0)
    model = build(retinanet_cfg(), DETECTORS)
    model.train_settings = type(model.train_settings)(
        assigner=type(model.train_settings.assigner)(0.5, 0.4, ignore_iof_thr=0.5))
    images, targets = _batch()
    base = model.bbox_head.get_targets
    feats = model.extract_feat(images.tensor)
    sizes = [tuple(f.shape[-2:]) for f in feats]
    anchors = model.bbox_head._make_anchors(sizes, torch.float32, torch.device("cpu"))[0]
    _, w0, *_ = base(anchors, sizes, images, targets, model.train_settings)
    targets[0].ignore_boxes = targets[0].boxes.__class__(torch.tensor([[0.0, 0, 128, 128]]))
    _, w1, *_ = base(anchors, sizes, images, targets, model.train_settings)
    assert w1 is not None and (w1[0] == 0).sum() > (0 if w0 is None else (w0[0] == 0).sum())


def test_retinanet_targets_match_per_image_assignment(retinanet_cfg):
    model = build(retinanet_cfg(), DETECTORS)
    images, targets = _batch()
    images = ImageBatch(images.tensor, [(128, 128), (128, 128)])
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    anchors = model.bbox_head._make_anchors(sizes, torch.float32, torch.device("cpu"))[0]
    labels, _, _, _, _, avg = model.bbox_head.get_targets(anchors, sizes, images, targets, model.train_settings)
    for i, t in enumerate(targets):
        res = model.train_settings.assigner.assign(anchors, t.boxes.tensor, gt_labels=t.labels)
        pos = res.gt_inds > 0
        assert torch.equal(labels[i][pos], t.labels[res.gt_inds[pos] - 1])
        assert torch.all(labels[i][~pos] == model.num_classes)
    assert avg == sum(max(int((labels[i] < 4).sum()), 1) for i in range(2))


def test_fcos_targets_small_case():
    head = FCOSHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=0, strides=[8],
                    regress_ranges=[(-1, 1e8)])
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [28.0, 28.0]])
    strides = torch.full((3,), 8.0)
    ranges = torch.tensor([[-1.0, 1e8]]).expand(3, 2)
    gts = [GroundTruth((32, 32), torch.tensor([[0.0, 0, 16, 8], [0, 0, 8, 8]]), torch.tensor([0, 1]))]
    labels, targets = head.get_targets(points, strides, ranges, gts)
    # point (4, 4) lies in both boxes: the smaller one (label 1) wins
    assert labels.tolist() == [[1, 0, 2]]
    torch.testing.assert_close(targets[0, 0], torch.tensor([4.0, 4, 4, 4]))
    torch.testing.assert_close(targets[0, 1], torch.tensor([12.0, 4, 4, 4]))


def test_fcos_center_sampling_and_norm_on_bbox():
    head = FCOSHead(num_classes=1, in_channels=8, feat_channels=8, stacked_convs=0, strides=[8],
                    regress_ranges=[(-1, 1e8)], center_sampling=True, center_sample_radius=1.0, norm_on_bbox=True)
    points = torch.tensor([[20.0, 20.0], [4.0, 4.0]])
    gts = [GroundTruth((64, 64), torch.tensor([[0.0, 0, 40, 40]]), torch.tensor([0]))]
    labels, targets = head.get_targets(points, torch.full((2,), 8.0), torch.tensor([[-1.0, 1e8]]).expand(2, 2), gts)
    assert labels.tolist() == [[0, 1]]  # (4, 4) is inside the box but outside the centre region
    torch.testing.assert_close(targets[0, 0], torch.tensor([2.5, 2.5, 2.5, 2.5]))


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["bbox_head"].update(dcn_on_last_conv=True), "dcn_on_last_conv"),
    (lambda c: c["train_cfg"].update(assigner={"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4}), "assigner"),
    (lambda c: c["test_cfg"].update(nms_pr=3), "did you mean 'nms_pre'"),
    (lambda c: c["test_cfg"]["nms"].update(type="soft_nms"), "soft_nms"),
    (lambda c: c["bbox_head"].update(num_clases=3), "did you mean 'num_classes'"),
    (lambda c: c.update(bbox_head={**c["bbox_head"], "type": "RetinaHead"}), "RetinaHead"),
])
def test_fcos_config_errors(fcos_cfg, edit, match):
    cfg = fcos_cfg()
    edit(cfg)
    if cfg["bbox_head"]["type"] == "RetinaHead":
        cfg["bbox_head"] = {"type": "RetinaHead", "num_classes": 4, "in_channels": 32}
    with pytest.raises(ConfigError, match=match):
        build(cfg, DETECTORS, path="model")


def test_retinanet_train_cfg_typo(retinanet_cfg):
    cfg = retinanet_cfg()
    cfg["train_cfg"]["allowed_boder"] = 0
    with pytest.raises(ConfigError, match="model.train_cfg.allowed_boder.*did you mean 'allowed_border'"):
        build(cfg, DETECTORS, path="model")


def test_retinanet_allowed_border_and_pos_weight(retinanet_cfg):
    cfg = retinanet_cfg()
    cfg["train_cfg"].update(allowed_border=0, pos_weight=2.0)
    model = build(cfg, DETECTORS)
    images, targets = _batch()
    losses = model.train().loss(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_init_weights_loads_detector_checkpoint(tmp_path, retinanet_cfg):
    torch.manual_seed(0)
    src = build(retinanet_cfg(), DETECTORS)
    path = tmp_path / "det.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    cfg = retinanet_cfg()
    cfg["init_cfg"] = {"type": "Pretrained", "checkpoint": str(path)}
    torch.manual_seed(1)
    dst = build(cfg, DETECTORS)
    dst.init_weights()
    assert torch.equal(dst.bbox_head.retina_cls.weight, src.bbox_head.retina_cls.weight)
