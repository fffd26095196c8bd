import math

import pytest
import torch

from detcli.models.coders import (
    MAX_LOG_RATIO,
    DeltaXYWHBBoxCoder,
    DistancePointBBoxCoder,
)


def test_max_log_ratio_constant():
    assert MAX_LOG_RATIO == pytest.approx(4.135166556742356)


@pytest.mark.parametrize("gt, stds, expected", [
    ([2, 3, 12, 13], (1, 1, 1, 1), [0.2, 0.3, 0, 0]),
    ([2, 3, 12, 13], (0.1, 0.1, 0.2, 0.2), [2, 3, 0, 0]),
    ([0, 0, 20, 5], (1, 1, 1, 1), [0.5, -0.25, math.log(2), -math.log(2)]),
])
def test_delta_encode_values(gt, stds, expected):
    coder = DeltaXYWHBBoxCoder(target_stds=stds)
    out = coder.encode(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([gt], dtype=torch.float32))
    torch.testing.assert_close(out, torch.tensor([expected], dtype=torch.float32), atol=1e-5, rtol=0)


def test_delta_decode_clamps_dw():
    out = DeltaXYWHBBoxCoder().decode(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[0.0, 0, 10, 10]]))
    torch.testing.assert_close(out, torch.tensor([[-307.5, -307.5, 317.5, 317.5]]), atol=1e-2, rtol=0)


def test_delta2bbox_mmdet_docstring_example():
    rois = torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 5, 5]])
    deltas = torch.tensor([[0.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 2, -1], [0.7, -1.9, -0.5, 0.3]])
    out = DeltaXYWHBBoxCoder().decode(rois, deltas, max_shape=(32, 32, 3))
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1409, 0.1409, 2.8591, 2.8591],
                             [0.0, 0.3161, 4.1945, 0.6839], [5.0, 5.0, 5.0, 5.0]])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("means, stds", [((0, 0, 0, 0), (1, 1, 1, 1)), ((0.1, -0.2, 0.0, 0.3), (0.1, 0.1, 0.2, 0.2))])
def test_delta_round_trip(means, stds):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    priors = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    xy2 = torch.rand(50, 2, generator=g) * 100
    gts = torch.cat([xy2, xy2 + 1 + torch.rand(50, 2, generator=g) * 50], 1)
    coder = DeltaXYWHBBoxCoder(means, stds)
    torch.testing.assert_close(coder.decode(priors, coder.encode(priors, gts)), gts, atol=1e-3, rtol=1e-4)


def test_delta_decode_per_class_and_empty():
    coder = DeltaXYWHBBoxCoder()
    priors = torch.tensor([[0.0, 0, 10, 10]])
    out = coder.decode(priors, torch.zeros(1, 8))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0, 10, 10, 0, 0, 10, 10]]))
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)


def test_delta_ctr_clamp():
    coder = DeltaXYWHBBoxCoder(add_ctr_clamp=True, ctr_clamp=32)
    out = coder.decode(torch.tensor([[0.0, 0, 100, 100]]), torch.tensor([[1.0, 0, 0, 0]]))
    torch.testing.assert_close(out, torch.tensor([[32.0, 0, 132, 100]]))


def test_distance_coder_values():
    coder = DistancePointBBoxCoder()
    p, gt = torch.tensor([[10.0, 10]]), torch.tensor([[0.0, 0, 20, 30]])
    torch.testing.assert_close(coder.encode(p, gt), torch.tensor([[10.0, 10, 10, 20]]))
    torch.testing.assert_close(coder.encode(p, gt, max_dis=15), torch.tensor([[10.0, 10, 10, 14.9]]))
    torch.testing.assert_close(coder.decode(p, coder.encode(p, gt)), gt)
    torch.testing.assert_close(coder.decode(p, torch.tensor([[20.0, 20, 20, 20]]), max_shape=(25, 25)),
                               torch.tensor([[0.0, 0, 25, 25]]))


def test_bad_coder_args():
    with pytest.raises(ValueError, match="4 values"):
        DeltaXYWHBBoxCoder(target_means=(0, 0))
