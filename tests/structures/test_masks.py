import cv2
import numpy as np
import pytest
import torch

from detcli.structures import BitmapMasks, PolygonMasks, polygons_to_bitmap
from detcli.structures.masks import rescaled_shape

H, W = 20, 30
SQUARE = [4.0, 2.0, 12.0, 2.0, 12.0, 10.0, 4.0, 10.0]  # pixels x 4..11, y 2..9
TRIANGLE = [20.0, 5.0, 28.0, 5.0, 20.0, 17.0]


def _polys():
    return PolygonMasks([[np.array(SQUARE)], [np.array(TRIANGLE)]], H, W)


def _bitmaps():
    return _polys().to_bitmap()


def _empty(kind):
    return BitmapMasks(np.zeros((0, H, W), np.uint8), H, W) if kind == "bitmap" else PolygonMasks([], H, W)


def test_rasterise_square_exactly():
    m = _bitmaps().masks
    assert m.shape == (2, H, W) and m.dtype == np.uint8
    expected = np.zeros((H, W), np.uint8)
    expected[2:10, 4:12] = 1
    assert np.array_equal(m[0], expected)
    assert _polys().areas[0] == 64.0 and _bitmaps().areas[0] == 64.0
    assert _polys().areas[1] == pytest.approx(48.0)
    assert _polys().get_bboxes().tolist() == [[4, 2, 12, 10], [20, 5, 28, 17]]
    assert _bitmaps().get_bboxes()[0].tolist() == [4, 2, 12, 10]


def test_rle_inputs():
    from pycocotools import mask as mask_utils

    square = _bitmaps().masks[0]
    compressed = mask_utils.encode(np.asfortranarray(square))
    assert np.array_equal(polygons_to_bitmap(compressed, H, W), square)
    as_text = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    assert np.array_equal(polygons_to_bitmap(as_text, H, W), square)
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = square.flatten(order="F")
    runs, last, count = [], 0, 0
    for v in flat:
        if v != last:
            runs.append(count)
            last, count = v, 0
        count += 1
    runs.append(count)
    assert np.array_equal(polygons_to_bitmap({"size": [H, W], "counts": runs}, H, W), square)


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_flip_twice_is_identity(kind):
    masks = _bitmaps() if kind == "bitmap" else _polys()
    for d in ("horizontal", "vertical", "diagonal"):
        once = masks.flip(d)
        assert not np.array_equal(once.to_ndarray(), masks.to_ndarray())
        assert np.array_equal(once.flip(d).to_ndarray(), masks.to_ndarray())
    with pytest.raises(ValueError, match="flip direction"):
        masks.flip("sideways")


def test_flip_values_agree_between_kinds():
    for d in ("horizontal", "vertical", "diagonal"):
        assert np.array_equal(_polys().flip(d).to_ndarray(), _bitmaps().flip(d).to_ndarray())
    h = _bitmaps().flip("horizontal").masks[0]
    assert h[2:10, W - 12:W - 4].all() and h.sum() == 64


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_resize_rescale_pad(kind):
    masks = _bitmaps() if kind == "bitmap" else _polys()
    big = masks.resize((40, 60))
    assert (big.height, big.width) == (40, 60) and big.to_ndarray().shape == (2, 40, 60)
    assert big.areas[0] == pytest.approx(256.0)
    assert big.to_ndarray()[0, 4:20, 8:24].all()
    re = masks.rescale(0.5)
    assert (re.height, re.width) == (10, 15)
    assert masks.rescale((60, 40)).to_ndarray().shape == (2, 40, 60)
    padded = masks.pad((25, 32))
    assert padded.to_ndarray().shape == (2, 25, 32)
    assert np.array_equal(padded.to_ndarray()[:, :H, :W], masks.to_ndarray())
    assert padded.to_ndarray()[:, H:].sum() == 0


def test_rescaled_shape():
    assert rescaled_shape(480, 640, (1333, 800)) == (800, 1067)
    with pytest.raises(ValueError):
        rescaled_shape(10, 10, 0)


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_crop(kind):
    masks = _bitmaps() if kind == "bitmap" else _polys()
    crop = masks.crop(np.array([8, 4, 24, 16]))
    assert (crop.height, crop.width) == (12, 16)
    got = crop.to_ndarray()
    assert got[0].sum() == 4 * 6 and got[0, 0:6, 0:4].all()  # square x 8..11, y 4..9
    assert crop.areas[0] == pytest.approx(24.0)  # polygons are clipped, so the area is the visible one
    assert np.array_equal(got, masks.to_ndarray()[:, 4:16, 8:24])


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_crop_outside_the_image_is_one_empty_pixel(kind):
    masks = _bitmaps() if kind == "bitmap" else _polys()
    crop = masks.crop(np.array([50, 50, 60, 60]))
    assert (crop.height, crop.width) == (1, 1)
    assert len(crop) == 2 and crop.to_ndarray().sum() == 0 and crop.areas.sum() == 0
    assert crop.get_bboxes().tolist() == [[0.0] * 4] * 2  # empty masks have an empty extent


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_expand_and_translate(kind):
    masks = _bitmaps() if kind == "bitmap" else _polys()
    ex = masks.expand(30, 40, 5, 7)
    assert ex.to_ndarray().shape == (2, 30, 40)
    assert np.array_equal(ex.to_ndarray()[:, 5:25, 7:37], masks.to_ndarray())
    tr = masks.translate((H, W), 5, "horizontal")
    assert tr.to_ndarray()[0, 2:10, 9:17].all() and tr.to_ndarray()[0].sum() == 64
    assert tr.to_ndarray()[1].sum() < masks.to_ndarray()[1].sum()  # the triangle leaves the canvas
    up = masks.translate((H, W), -4, "vertical")
    assert up.to_ndarray()[0, 0:6, 4:12].all() and up.to_ndarray()[0].sum() == 48
    with pytest.raises(ValueError, match="direction"):
        masks.translate((H, W), 1, "diagonal")


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_empty_masks(kind):
    masks = _empty(kind)
    assert len(masks) == 0 and masks.areas.shape == (0,)
    for out in (masks.resize((5, 6)), masks.flip(), masks.pad((30, 40)), masks.crop([0, 0, 5, 5]),
                masks.expand(30, 40, 1, 1), masks.translate((H, W), 3)):
        assert len(out) == 0 and out.to_ndarray().shape[0] == 0
    assert masks.to_tensor().shape == (0, H, W) and masks.get_bboxes().shape == (0, 4)
    car = masks.crop_and_resize(np.zeros((0, 4)), (28, 28))
    assert isinstance(car, BitmapMasks) and car.to_ndarray().shape == (0, 28, 28)


@pytest.mark.parametrize("kind", ["bitmap", "polygon"])
def test_crop_and_resize_by_hand(kind):
    masks = _bitmaps() if kind == "bitmap" else _polys()
    boxes = torch.tensor([[4.0, 2.0, 12.0, 10.0], [0.0, 0.0, 16.0, 12.0], [0.0, 0.0, 4.0, 4.0]])
    out = masks.crop_and_resize(boxes, (4, 4), inds=torch.tensor([0, 0, 0]))
    assert isinstance(out, BitmapMasks) and out.masks.shape == (3, 4, 4)
    assert out.masks[0].all()  # the box is the square
    # 4 px per column (x 0..3 | 4..7 | 8..11 | 12..15), 3 px per row (y 0..2 | 3..5 | 6..8 | 9..11)
    cols = np.array([0, 1, 1, 0])
    rows = np.array([0, 1, 1, 0])  # row 0 has 1 of 3 pixels in (y=2): below 0.5; row 3 has y=9 only
    assert np.array_equal(out.masks[1], rows[:, None] * cols[None, :])
    assert out.masks[2].sum() == 0
    two = masks.crop_and_resize(np.array([[18.0, 4.0, 30.0, 18.0]] * 2), (6, 6), inds=np.array([1, 0]))
    assert two.masks[0].sum() > 0 and two.masks[1].sum() == 0


def test_crop_and_resize_polygons_agree_with_bitmaps():
    gen = np.random.default_rng(0)
    centre = np.array([15.0, 10.0])
    angles = np.sort(gen.uniform(0, 2 * np.pi, 9))
    radius = gen.uniform(4, 9, 9)
    blob = np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1).reshape(-1)
    polys = PolygonMasks([[blob]], H, W)
    bitmaps = polys.to_bitmap()
    boxes = np.array([[5.0, 1.0, 25.0, 19.0], [10.0, 5.0, 20.0, 15.0], [3.5, 0.5, 27.2, 19.7]])
    inds = np.zeros(3, np.int64)
    a = polys.crop_and_resize(boxes, (28, 28), inds).masks.astype(bool)
    b = bitmaps.crop_and_resize(boxes, (28, 28), inds).masks.astype(bool)
    diff = a ^ b
    assert diff.mean() < 0.05
    # every disagreement lies on the boundary band of the polygon target: within one image pixel,
    # i.e. <= 2 output cells (the boxes map ~1.4 cells to a pixel)
    kernel = np.ones((5, 5), np.uint8)
    for k in range(3):
        ak = a[k].astype(np.uint8)
        band = (cv2.dilate(ak, kernel) > 0) & ~(cv2.erode(ak, kernel) > 0)
        assert not (diff[k] & ~band).any()


def test_crop_and_resize_rejects_soft_targets_and_mismatch():
    with pytest.raises(ValueError, match="binarize"):
        _bitmaps().crop_and_resize(np.zeros((1, 4)), (4, 4), binarize=False)
    with pytest.raises(ValueError, match="inds"):
        _polys().crop_and_resize(np.zeros((2, 4)), (4, 4), inds=np.array([0]))


def test_indexing_and_tensor():
    polys = _polys()
    assert len(polys[1]) == 1 and len(polys[np.array([True, False])]) == 1 and len(polys[[1, 0]]) == 2
    bits = _bitmaps()
    t = bits[np.array([1])].to_tensor(torch.float32)
    assert t.shape == (1, H, W) and t.dtype == torch.float32 and t.sum().item() == pytest.approx(polys.areas[1], abs=8)
    assert bits.to_tensor().dtype == torch.bool
