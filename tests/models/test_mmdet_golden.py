"""det equals MMDetection, stage by stage, on golden files written by MMDetection itself.

``tests/golden/mmdet_<model>.pt`` were made by ``tests/golden/make_mmdet_golden.py`` with mmdet 3.3.0
(see its docstring). Here the same weights are rebuilt from ``tests/golden/mmdet_recipe.py`` under
MMDetection's key names, written as an MMDetection 2.x checkpoint, read and renamed by det's reader
(``read_checkpoint`` + ``detector_state_dict``: the path of ``det test`` and ``--load-from``), loaded strictly
into det's model (built from det's preset with the generator's small sizes) and run on the same batch. float64: every stage within 1e-9 and identical
detections; float32: every stage within 1e-3 of the float64 golden values (relative to their scale).
No mmdet is needed.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.config import load_config
from detcli.models.pretrained import detector_state_dict
from detcli.registry import DETECTORS, build
from detcli.structures import BitmapMasks, Boxes, GroundTruth, ImageBatch
from detcli.weights import CheckpointFile, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
_spec = importlib.util.spec_from_file_location("mmdet_recipe", GOLDEN / "mmdet_recipe.py")
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)

MODELS = ("retinanet", "fcos", "atss", "gfl", "yolox", "faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")
# FCOS: the pytorch-style R50 model file (the mmdet-named FCOS presets use the caffe backbone)
PRESETS = {"retinanet": "retinanet_r50_fpn_1x_coco.yaml", "fcos": "_base_/models/fcos_r50_fpn.yaml",
           "atss": "atss_r50_fpn_1x_coco.yaml", "gfl": "gfl_r50_fpn_1x_coco.yaml",
           "faster_rcnn": "faster_rcnn_r50_fpn_1x_coco.yaml", "mask_rcnn": "mask_rcnn_r50_fpn_1x_coco.yaml",
           "yolox": "_base_/models/yolox_s.yaml", "cascade_rcnn": "cascade_rcnn_r50_fpn_1x_coco.yaml",
           "cascade_mask_rcnn": "cascade_mask_rcnn_r50_fpn_1x_coco.yaml"}
#: dense heads: the names of their raw output groups in the golden files
DENSE = {"retinanet": ("cls_scores", "bbox_preds"), "fcos": ("cls_scores", "bbox_preds", "centernesses"),
         "atss": ("cls_scores", "bbox_preds", "centernesses"), "gfl": ("cls_scores", "bbox_preds"),
         "yolox": ("cls_scores", "bbox_preds", "objectnesses")}
WITH_MASKS = ("mask_rcnn", "cascade_mask_rcnn")
#: the generator's test score threshold of the cascades (its random weights score few boxes above 0.05)
CASCADE_SCORE_THR = 0.03
CH = 32
F64_TOL = 1e-9
F32_REL = 1e-3


def det_config(name: str, mmdet3: bool = False) -> dict:
    """det's preset of the family with the generator's sizes (ResNet-18, 32 channels, 4 classes);
    ``mmdet3``: with the test_cfg keys that select MMDetection 3.x behaviour (docs/mmdet-compat.md)."""
    cfg = copy.deepcopy(load_config(str(ROOT / "presets" / PRESETS[name]))["model"])
    if name == "yolox":  # CSPDarknet deepen 0.33 widen 0.25; mmdet keeps every box NMS leaves
        cfg["backbone"].update(deepen_factor=0.33, widen_factor=0.25)
        cfg["neck"].update(in_channels=[64, 128, 256], out_channels=CH)
        cfg["bbox_head"].update(num_classes=recipe.NUM_CLASSES, in_channels=CH, feat_channels=CH)
        cfg["test_cfg"].update(max_per_img=-1, score_thr=0.015)
        return cfg
    cfg["backbone"]["depth"] = 18
    cfg["neck"].update(in_channels=[64, 128, 256, 512], out_channels=CH)
    if name in DENSE:
        cfg["bbox_head"].update(num_classes=recipe.NUM_CLASSES, in_channels=CH, feat_channels=CH)
        if name in ("fcos", "atss", "gfl"):
            cfg["bbox_head"]["norm_cfg"]["num_groups"] = 8
        if name != "fcos":  # FCOS assigns points itself (and ignores crowd boxes, as mmdet's FCOS)
            cfg["train_cfg"]["assigner"]["ignore_iof_thr"] = 0.5
        if mmdet3:
            cfg["test_cfg"]["drop_empty_boxes"] = True
        return cfg
    cfg["rpn_head"].update(in_channels=CH, feat_channels=CH)
    roi = cfg["roi_head"]
    roi["bbox_roi_extractor"]["out_channels"] = CH
    cascade = name.startswith("cascade")
    for head in roi["bbox_head"] if cascade else [roi["bbox_head"]]:
        head.update(in_channels=CH, fc_out_channels=64, num_classes=recipe.NUM_CLASSES)
        if cascade:  # the generator uses mmdet's Faster R-CNN losses (L1) in every stage
            head["loss_bbox"] = {"type": "L1Loss", "loss_weight": 1.0}
    if name in WITH_MASKS:
        roi["mask_roi_extractor"]["out_channels"] = CH
        roi["mask_head"].update(num_convs=2, in_channels=CH, conv_out_channels=CH, num_classes=recipe.NUM_CLASSES)
    train, test = cfg["train_cfg"], cfg["test_cfg"]
    # samplers larger than the candidate sets: no random choice, the same samples as mmdet's run
    train["rpn"]["assigner"]["ignore_iof_thr"] = 0.5
    train["rpn"]["sampler"].update(num=8192, pos_fraction=0.5)
    train["rpn_proposal"]["max_per_img"] = 300
    for stage in train["rcnn"] if cascade else [train["rcnn"]]:
        stage["assigner"]["ignore_iof_thr"] = 0.5
        stage["sampler"].update(num=2048, pos_fraction=0.5)
    test["rpn"]["max_per_img"] = 300
    if cascade:  # the generator's RPN settings are Faster R-CNN's
        cfg["rpn_head"]["loss_bbox"] = {"type": "L1Loss", "loss_weight": 1.0}
        train["rpn"]["allowed_border"] = -1
        train["rpn_proposal"]["max_per_img"] = 300
        test["rcnn"]["score_thr"] = CASCADE_SCORE_THR
    return cfg


def mmdet_checkpoint(golden: dict, path: Path) -> CheckpointFile:
    """The recipe weights under mmdet's names as an MMDetection 2.x checkpoint file, read back by det's reader."""
    values = recipe.make_state_dict({k: tuple(s) for k, s in golden["state_dict_shapes"].items()})
    state_dict = {k: torch.from_numpy(v) for k, v in values.items()}
    meta = {"mmdet_version": "2.28.2", "CLASSES": tuple(golden["classes"]), "config": repr(golden["mmdet_config"])}
    torch.save({"meta": meta, "state_dict": state_dict}, path)
    ckpt = read_checkpoint(path)
    assert (ckpt.source, ckpt.classes) == ("mmdet", tuple(golden["classes"]))
    return ckpt


def batch(dtype: torch.dtype, with_masks: bool) -> tuple[ImageBatch, list[GroundTruth]]:
    images = ImageBatch(torch.from_numpy(recipe.make_images()).to(dtype), [tuple(s) for s in recipe.IMAGE_SIZES])
    targets = []
    for i, size in enumerate(recipe.IMAGE_SIZES):
        masks = BitmapMasks(recipe.make_masks(i), *recipe.PAD_SHAPE) if with_masks else None
        targets.append(GroundTruth(tuple(size), Boxes(torch.tensor(recipe.GT_BOXES[i])),
                                   torch.tensor(recipe.GT_LABELS[i]), Boxes(torch.tensor(recipe.GT_IGNORE[i])),
                                   masks))
    return images, targets


def build_det(name: str, golden: dict, tmp_path: Path, dtype: torch.dtype, mmdet3: bool = False) -> torch.nn.Module:
    ckpt = mmdet_checkpoint(golden, tmp_path / f"{name}_mmdet.pth")
    model = build(det_config(name, mmdet3), DETECTORS, path="model").to(dtype)  # before loading: no float32 rounding
    converted = detector_state_dict(ckpt, model)  # what det test / --load-from / init_cfg do with the file
    own = model.state_dict()
    assert sorted(set(own) - set(converted)) == [] and sorted(set(converted) - set(own)) == []
    model.load_state_dict(converted, strict=True)
    return model


class Diff:
    """Largest absolute difference of a stage (and the golden scale, for relative float32 checks)."""

    def __init__(self) -> None:
        self.stages: dict[str, tuple[float, float]] = {}

    def add(self, stage: str, got: torch.Tensor, want: torch.Tensor) -> None:
        assert tuple(got.shape) == tuple(want.shape), (stage, tuple(got.shape), tuple(want.shape))
        got, want = got.detach().double(), want.double()
        diff = float((got - want).abs().max()) if want.numel() else 0.0
        scale = float(want.abs().max()) if want.numel() else 0.0
        old = self.stages.get(stage, (0.0, 0.0))
        self.stages[stage] = (max(old[0], diff), max(old[1], scale))

    def add_maps(self, stage: str, maps, summaries) -> None:
        assert len(maps) == len(summaries), stage
        for m, s in zip(maps, summaries):
            assert list(m.shape) == list(s["shape"]), (stage, tuple(m.shape), s["shape"])
            self.add(stage, m[:, ::s["step"]], s["values"])
            # whole-map sums (every element counts) as one element's share: sum / sqrt(n), sumsq / n
            m64, n = m.detach().double(), m.numel()
            self.add(stage, (m64.sum() / n ** 0.5).reshape(1), torch.tensor([s["sum"] / n ** 0.5], dtype=torch.float64))
            self.add(stage, (m64.square().sum() / n).sqrt().reshape(1), torch.tensor([(s["sumsq"] / n) ** 0.5], dtype=torch.float64))

    def check(self, dtype: torch.dtype) -> None:
        for stage, (diff, scale) in self.stages.items():
            if dtype == torch.float64:
                assert diff <= F64_TOL, f"{stage}: max abs diff {diff:.3g} > {F64_TOL}"
            else:
                assert diff <= F32_REL * max(scale, 1.0), f"{stage}: max abs diff {diff:.3g} (scale {scale:.3g})"


def run_stages(name: str, model: torch.nn.Module, golden: dict, dtype: torch.dtype) -> tuple[Diff, list, list]:
    """Compare every stage; return the diffs, det's detections and the golden ones."""
    d = Diff()
    with_masks = name in WITH_MASKS
    images, targets = batch(dtype, with_masks)
    model.eval()
    with torch.no_grad():
        c = model.backbone(images.tensor)
        d.add_maps("backbone", c, golden["backbone"])
        feats = tuple(model.neck(c))
        d.add_maps("neck", feats, golden["neck"])
        if name in DENSE:
            raw = model.bbox_head(feats)  # FCOS distances in stride units (mmdet's training-mode output)
            for key, maps in zip(DENSE[name], raw):
                d.add_maps("head", maps, golden["head"][key])
        else:
            rpn_cls, rpn_reg = model.rpn_head(feats)
            d.add_maps("rpn_head", rpn_cls, golden["rpn_head"]["cls_scores"])
            d.add_maps("rpn_head", rpn_reg, golden["rpn_head"]["bbox_preds"])
            props = model.rpn_head.get_proposals(rpn_cls, rpn_reg, images, model.rpn_test)
            if dtype == torch.float64:
                for (boxes, scores), want in zip(props, golden["proposals"]):
                    d.add("proposals", boxes, want["boxes"])
                    d.add("proposals", scores, want["scores"])
            # RoI head on mmdet's proposals (float32 NMS may keep a slightly different set)
            from detcli.models.roi_head import boxes_to_rois

            rois = boxes_to_rois([p["boxes"] for p in golden["proposals"]]).to(dtype)
            head = model.roi_head.stages[0] if name.startswith("cascade") else model.roi_head  # the first stage
            cls_score, bbox_pred = head.bbox_head(head.bbox_roi_extractor(feats, rois))
            d.add("roi_head", cls_score, golden["roi_head"]["cls_score"])
            d.add("roi_head", bbox_pred, golden["roi_head"]["bbox_pred"])
    model.train()
    torch.manual_seed(0)
    losses = model.loss(images, targets)
    assert set(losses) == set(golden["losses"])
    for key, want in golden["losses"].items():
        d.add(f"losses.{key}", losses[key].reshape(()), want.reshape(()))
    if "losses_l1" in golden:  # YOLOX's last epochs: the extra L1 loss on the encoded boxes
        model.bbox_head.use_l1 = True
        losses = model.loss(images, targets)
        model.bbox_head.use_l1 = False
        assert set(losses) == set(golden["losses_l1"])
        for key, want in golden["losses_l1"].items():
            d.add(f"losses_l1.{key}", losses[key].reshape(()), want.reshape(()))
    model.eval()
    dets = model.predict(images)
    return d, dets, golden["detections"]


def unpack_masks(want: dict) -> torch.Tensor:
    n = int(np.prod(want["mask_shape"]))
    bits = np.unpackbits(want["masks_packed"].numpy())[:n]
    return torch.from_numpy(bits.reshape(want["mask_shape"]).astype(bool))


@pytest.fixture(scope="module", params=MODELS)
def golden(request) -> tuple[str, dict]:
    return request.param, torch.load(GOLDEN / f"mmdet_{request.param}.pt", map_location="cpu", weights_only=True)


def test_golden_files_hold_real_work(golden):
    name, g = golden
    assert g["versions"]["mmdet"] == "3.3.0"
    assert all(torch.isfinite(v) and v > 0 for k, v in g["losses"].items() if k.startswith("loss"))
    assert [len(d["scores"]) for d in g["detections"]] == [len(d["labels"]) for d in g["detections"]]
    assert all(0 < len(d["scores"]) for d in g["detections"])


def stable_prefix(scores: torch.Tensor, gap: float = 1e-4) -> int:
    """Length of the leading run of golden detections with no near-tie (score gap < ``gap``) among them."""
    close = ((scores[:-1] - scores[1:]) < gap).nonzero(as_tuple=True)[0]
    return int(close[0]) if len(close) else len(scores)


#: near-tie gap of the float32 comparison per model (YOLOX's golden scores are ~0.03, its product of
#: two probabilities: a proportionally smaller gap)
STABLE_GAP = {"yolox": 1e-6}


def compare_detections(d: Diff, dets: list, want: list, exact: bool, gap: float = 1e-4) -> None:
    """Same labels, boxes and scores (and masks) as mmdet. det's ``Detections`` hold float32 boxes and
    scores by contract, so they are compared with mmdet's rounded to float32. float32 runs (``exact=False``): the leading
    detections up to the first near-tie of scores, which float32 may order either way."""
    for got, w in zip(dets, want):
        k = len(w["scores"]) if exact else stable_prefix(w["scores"], gap)
        if exact:
            assert len(got) == k
        else:
            assert k >= 3 and len(got) >= k
        assert got.labels[:k].tolist() == w["labels"][:k].tolist()
        d.add("detections", got.boxes.tensor[:k], w["boxes"][:k].float())
        d.add("detections", got.scores[:k], w["scores"][:k].float())
        if exact and "masks_packed" in w:  # the golden file keeps the first detections' masks
            want_masks = unpack_masks(w)
            assert torch.equal(got.masks[:len(want_masks)], want_masks)


def test_float64_equals_mmdet(golden, tmp_path):
    name, g = golden
    model = build_det(name, g, tmp_path, torch.float64)
    d, dets, _ = run_stages(name, model, g, torch.float64)
    # det's defaults are mmdet 2.x; the dense heads' 2.x detections were made with min_bbox_size -1
    compare_detections(d, dets, g.get("detections_2x", g["detections"]), exact=True)
    d.check(torch.float64)


def test_float32_close_to_mmdet(golden, tmp_path):
    name, g = golden
    model = build_det(name, g, tmp_path, torch.float32)
    d, dets, _ = run_stages(name, model, g, torch.float32)
    compare_detections(d, dets, g.get("detections_2x", g["detections"]), exact=False, gap=STABLE_GAP.get(name, 1e-4))
    d.check(torch.float32)


@pytest.mark.parametrize("name", ["retinanet", "fcos", "gfl"])  # ATSS: no flat candidates in this batch
def test_drop_empty_boxes_selects_mmdet3_dense_post_processing(name, tmp_path):
    """mmdet 3.x drops flat boxes (a side <= min_bbox_size = 0, clipped at the border) before NMS; 2.x keeps them."""
    g = torch.load(GOLDEN / f"mmdet_{name}.pt", map_location="cpu", weights_only=True)
    images, _ = batch(torch.float64, False)
    dets2 = build_det(name, g, tmp_path, torch.float64).eval().predict(images)
    dets3 = build_det(name, g, tmp_path, torch.float64, mmdet3=True).eval().predict(images)
    d = Diff()
    compare_detections(d, dets3, g["detections"], exact=True)
    d.check(torch.float64)
    flat = [int(((x.boxes.tensor[:, 2:] - x.boxes.tensor[:, :2]) <= 0).any(1).sum()) for x in dets2]
    assert sum(flat) > 0  # the golden batch has flat candidates, so the two behaviours differ
    assert all(((x.boxes.tensor[:, 2:] - x.boxes.tensor[:, :2]) > 0).all() for x in dets3)
