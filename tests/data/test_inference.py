from __future__ import annotations

import numpy as np
import pytest

from detcli.data import build_test_pipeline, prepare_image
from detcli.errors import DatasetError

from tests.data.helpers import tta_pipeline


def test_prepare_image_runs_test_pipeline_in_memory() -> None:
    cfg = tta_pipeline((320, 320), flip=True)
    cfg.insert(1, {"type": "LoadAnnotations"})  # train leftovers are dropped
    pipeline = build_test_pipeline(cfg)
    img = np.zeros((120, 160, 3), np.uint8)
    out = prepare_image(img, pipeline, filename="frame_0001", image_id=5)
    assert len(out) == 2
    s = out[0]
    assert s.meta.filename == "frame_0001" and s.meta.image_id == 5
    assert s.meta.ori_shape == (120, 160) and s.meta.img_shape == (240, 320) and s.meta.pad_shape == (256, 320)
    assert s.gt is None and out[1].meta.flip
    grey = prepare_image(np.zeros((40, 40), np.uint8), pipeline)
    assert grey[0].image.shape[0] == 3
    with pytest.raises(DatasetError, match="expected an"):
        prepare_image(np.zeros((2, 2, 2, 2)), pipeline)
