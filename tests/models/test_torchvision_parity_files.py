"""End to end on JPEG files: det's ``retinanet_r50_fpn_coco_tv`` preset (its test pipeline, model and
``map_to_original``) gives torchvision's ``model.eval()(images)`` detections, with the same randomised
weights (tests/models/torchvision_helpers.py).

Both models run in float64 (in float32 they agree to ~1e-5 relative only, their convolutions and
frozen norms round differently). det's pipeline is float32 and bit-exact with torchvision's transform
(tests/data/test_torchvision_transform.py); torchvision gets ``to_tensor(image).double()``, so the
inputs differ by float32 rounding (~1e-7) and boxes agree to 1e-3 px, scores to 1e-5; detections whose
scores are closer than 1e-6 (near-ties, e.g. 4.5e-9 apart) may come in either order. The image scale
is lowered to (320, 200) on both sides to keep the test fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from detcli.config import load_config
from detcli.data import build_test_pipeline, collate, map_to_original
from detcli.resources import find_preset
from detcli.structures import ImageBatch

from tests.data.helpers import write_jpegs
from tests.models.torchvision_helpers import IDS, det_from_torchvision, perturb_dense, tv_dense_model

MIN_SIZE, MAX_SIZE = 200, 320
TIE = 1e-6


def _assert_same_up_to_ties(labels: torch.Tensor, boxes: torch.Tensor, expected: dict) -> None:
    """Same labels and boxes (1e-3 px) in the same order, except within runs of near-tied scores."""
    scores = expected["scores"]
    start = 0
    for end in range(1, len(scores) + 1):
        if end < len(scores) and float(scores[end - 1] - scores[end]) < TIE:
            continue
        todo = list(range(start, end))  # a run of near-ties: match each expected entry to one of det's
        for k in range(start, end):
            match = [j for j in todo if int(labels[j]) == int(expected["labels"][k])
                     and float((boxes[j] - expected["boxes"][k]).abs().max()) <= 1e-3]
            assert match, f"torchvision's detection {k} has no counterpart in det's entries {start}..{end - 1}"
            todo.remove(match[0])
        start = end


@pytest.mark.slow  # 12-16 s on two shared cores (two ResNet-50 built, perturbed and run in float64)
def test_retinanet_tv_preset_on_files_equals_torchvision(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path, [(150, 200), (200, 130)], seed=1)
    g = torch.Generator().manual_seed(0)
    tv = tv_dense_model("retinanet", min_size=MIN_SIZE, max_size=MAX_SIZE)
    perturb_dense(tv, "retinanet", g)
    cfg = load_config(str(find_preset("retinanet_r50_fpn_coco_tv")))
    pipeline_cfg = cfg["data"]["test"]["pipeline"]
    assert pipeline_cfg[1]["img_scale"] == [1333, 800]
    pipeline_cfg[1]["img_scale"] = [MAX_SIZE, MIN_SIZE]
    det, _ = det_from_torchvision("retinanet_r50_fpn_coco_tv", tv, cfg)
    tv, det = tv.double(), det.double()

    pipeline = build_test_pipeline(pipeline_cfg)
    batch = collate([pipeline({"img_info": {"filename": p.name}, "img_prefix": str(tmp_path)}) for p in paths])
    with torch.no_grad():
        dets = det.predict(ImageBatch(batch.images.tensor.double(), batch.images.image_sizes))
        expected = tv([to_tensor(Image.open(p).convert("RGB")).double() for p in paths])
    assert [tuple(m.img_shape) for m in batch.metas] == [(200, 266), (307, 200)]
    assert batch.images.image_sizes == [(200, 266), (307, 200)]  # boxes clipped there, as by torchvision
    assert batch.images.tensor.shape[-2:] == (320, 288)
    for d, meta, e in zip(dets, batch.metas, expected):
        got = map_to_original(d, meta)
        assert got.image_size == meta.ori_shape
        assert len(got) == len(e["boxes"]) == 300  # the cap binds: real detections
        assert len(set(e["labels"].tolist())) > 3
        torch.testing.assert_close(got.scores.double(), e["scores"], rtol=0, atol=1e-5)
        _assert_same_up_to_ties(IDS[got.labels], got.boxes.tensor.double(), e)

