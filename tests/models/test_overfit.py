"""A tiny RetinaNet / FCOS (ResNet-18, 32-channel FPN) must overfit one synthetic image on CPU."""

import pytest
import torch

import detcli.models  # noqa: F401  (registers the model components)
from detcli.registry import DETECTORS, build
from detcli.structures import GroundTruth, ImageBatch, box_iou

BOXES = torch.tensor([[10.0, 12, 60, 50], [70, 30, 118, 110], [20, 70, 55, 120]])
COLORS = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0]])


def _image():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 128, 128, generator=g) * 0.3
    for b, c in zip(BOXES.int(), COLORS):
        img[:, b[1]:b[3], b[0]:b[2]] = c[:, None, None]
    img = (img - 0.45) / 0.25
    return ImageBatch(img[None], [(128, 128)]), [GroundTruth((128, 128), BOXES, torch.tensor([0, 1, 2]))]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["retinanet", "fcos"])
def test_tiny_detector_overfits_one_image(which, retinanet_cfg, fcos_cfg):
    torch.manual_seed(0)
    cfg = retinanet_cfg() if which == "retinanet" else fcos_cfg()
    cfg["backbone"].update(frozen_stages=-1, norm_eval=False)
    model = build(cfg, DETECTORS, path="model")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    images, targets = _image()
    model.train()
    first = None
    for _ in range(60):
        losses = model(images, targets)
        loss = sum(losses.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 35)
        opt.step()
    assert loss.item() < 0.4 * first
    dets = model.eval()(images)[0]
    assert len(dets) >= 3
    top = dets[torch.arange(min(len(dets), 10))]
    ious = box_iou(targets[0].boxes, top.boxes)  # (3, k)
    for g, label in enumerate(targets[0].labels.tolist()):
        same_class = top.labels == label
        assert same_class.any(), f"no detection of class {label} in the top 10"
        assert ious[g][same_class].max() > 0.5, f"box {g} not found: IoUs {ious[g]}"
