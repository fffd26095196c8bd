import pytest
import torch

from detcli.structures import Boxes, BoxFormat, box_iou, box_overlaps, convert

B1 = torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]])
B2 = torch.tensor([[0.0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]])


def test_convert_round_trips_and_values():
    xyxy = torch.tensor([[10.0, 20, 30, 60]])
    torch.testing.assert_close(convert(xyxy, "xyxy", "xywh"), torch.tensor([[10.0, 20, 20, 40]]))
    torch.testing.assert_close(convert(torch.tensor([[5.0, 5, 10, 10]]), BoxFormat.CXCYWH, BoxFormat.XYXY),
                               torch.tensor([[0.0, 0, 10, 10]]))
    for fmt in ("xywh", "cxcywh", "xyxy"):
        torch.testing.assert_close(convert(convert(xyxy, "xyxy", fmt), fmt, "xyxy"), xyxy)
    assert convert(torch.zeros(0, 4), "xywh", "xyxy").shape == (0, 4)


def test_unknown_format_lists_allowed():
    with pytest.raises(ValueError, match="xyxy, xywh, cxcywh"):
        convert(torch.zeros(1, 4), "yxyx", "xyxy")


def test_boxes_container():
    boxes = Boxes(B1)
    assert len(boxes) == 3 and boxes.tensor.dtype == torch.float32
    assert len(boxes[0]) == 1 and len(boxes[1:]) == 2 and len(boxes[torch.tensor([True, False, True])]) == 2
    assert len(Boxes(torch.zeros(0))) == 0 and Boxes([]).tensor.shape == (0, 4)
    torch.testing.assert_close(boxes.area(), torch.tensor([100.0, 100, 60]))
    torch.testing.assert_close(boxes.centers()[0], torch.tensor([5.0, 5.0]))
    assert len(Boxes.cat([boxes, boxes])) == 6 and len(Boxes.cat([])) == 0
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Boxes(torch.zeros(3, 5))


def test_boxes_clip_flip_scale_nonempty():
    boxes = Boxes(torch.tensor([[-5.0, 2, 120, 50], [10, 20, 30, 40]]))
    boxes.clip_((100, 100))
    torch.testing.assert_close(boxes.tensor[0], torch.tensor([0.0, 2, 100, 50]))
    flipped = Boxes(torch.tensor([[10.0, 20, 30, 40]])).flip((100, 100))
    torch.testing.assert_close(flipped.tensor, torch.tensor([[70.0, 20, 90, 40]]))
    torch.testing.assert_close(Boxes(torch.tensor([[10.0, 20, 30, 40]])).flip((100, 100), "diagonal").tensor,
                               torch.tensor([[70.0, 60, 90, 80]]))
    with pytest.raises(ValueError, match="direction"):
        Boxes(torch.tensor([[10.0, 20, 30, 40]])).flip((100, 100), "sideways")
    torch.testing.assert_close(Boxes(torch.tensor([[1.0, 2, 3, 4]])).scale(2, 3).tensor, torch.tensor([[2.0, 6, 6, 12]]))
    assert Boxes(torch.tensor([[0.0, 0, 0, 5], [0, 0, 2, 2]])).nonempty().tolist() == [False, True]


def test_overlaps_doc_values():
    iou = box_overlaps(B1, B2)
    torch.testing.assert_close(iou, torch.tensor([[0.5, 0, 0], [0, 0, 1], [0, 0, 0]]))
    torch.testing.assert_close(box_overlaps(B1, B2, is_aligned=True), torch.tensor([0.5, 0, 0]))
    torch.testing.assert_close(box_overlaps(B1, B2, mode="iof"), torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 0]]))
    giou = box_overlaps(B1, B2, mode="giou")
    torch.testing.assert_close(giou, torch.tensor([[0.5, 0.0, -0.5], [-0.25, -0.05, 1.0],
                                                   [-0.837093, -0.876645, -0.821429]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(box_overlaps(B1, B2, mode="giou", is_aligned=True),
                               torch.tensor([0.5, -0.05, -0.821429]), atol=1e-5, rtol=0)


def test_overlaps_empty_batched_and_touching():
    assert box_overlaps(torch.zeros(0, 4), torch.tensor([[0.0, 0, 10, 9]])).shape == (0, 1)
    assert box_overlaps(torch.tensor([[0.0, 0, 10, 9]]), torch.zeros(0, 4)).shape == (1, 0)
    assert box_overlaps(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 0)
    assert box_overlaps(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[10.0, 0, 20, 10]])).item() == 0.0
    batched = box_overlaps(B1[None].repeat(2, 1, 1), B2[None].repeat(2, 1, 1))
    assert batched.shape == (2, 3, 3)
    torch.testing.assert_close(batched[1], box_overlaps(B1, B2))
    assert box_iou(Boxes(B1), Boxes(B2)).shape == (3, 3)
    with pytest.raises(ValueError, match="mode"):
        box_overlaps(B1, B2, mode="dice")
    with pytest.raises(ValueError, match="equal counts"):
        box_overlaps(B1, B2[:2], is_aligned=True)
