"""tinydet.geometry: named pads, their conversions, one output-size rule and the window interval."""
import pytest

from tinydet.geometry import Pads, Rect, conv_out_size, input_rect


def test_pads_orders():
    p = Pads(top=1, left=2, bottom=3, right=4)
    assert p.to_torch() == (2, 4, 1, 3)
    assert Pads.from_torch(p.to_torch()) == p
    assert p.to_onnx() == [0, 0, 1, 2, 0, 0, 3, 4]
    assert p.to_onnx(rank=2) == [1, 2, 3, 4]
    assert Pads.load(p.to_dict()) == p
    assert Pads.load([2, 4, 1, 3]) == p  # schedule.json v1: (left, right, top, bottom)
    assert not p.is_zero and Pads().is_zero


def test_conv_out_size():
    assert conv_out_size(224, 3, 2, 1, 1) == 112
    assert conv_out_size(7, 3, 1, 0, 0) == 5
    assert conv_out_size(10, 3, 1, 2, 2, dilation=2) == 10
    assert conv_out_size(5, 2, 2) == 2


def test_input_rect_border_only():
    # interior tile: no padding; border tile: padding on its border side only
    r, p = input_rect(Rect(2, 4, 2, 4), kernel=3, stride=1, padding=1, in_h=8, in_w=8)
    assert (r, p) == (Rect(1, 5, 1, 5), Pads())
    r, p = input_rect(Rect(0, 4, 4, 8), kernel=3, stride=2, padding=1, in_h=16, in_w=16)
    assert r == Rect(0, 8, 7, 16) and p == Pads(top=1, left=0, bottom=0, right=0)
    # convolving the padded rect with padding 0 gives exactly the requested size
    assert conv_out_size(r.h, 3, 2, p.top, p.bottom) == 4 and conv_out_size(r.w, 3, 2, p.left, p.right) == 4


def test_onnx_vectors_round_trip_and_refuse_other_axes():
    p = Pads(top=-1, left=2, bottom=0, right=-3)
    assert Pads.from_onnx(p.to_onnx()) == p and Pads.from_onnx(p.to_onnx(rank=2)) == p
    assert Pads.from_onnx([0, 0, 1, 2, 0, 0, 3, 4]) == Pads(1, 2, 3, 4)
    for bad in ([0, 1, 1, 2, 0, 0, 3, 4], [0, 0, 1, 2, 5, 0, 3, 4], [1, 2, 3], [1, 2]):
        with pytest.raises(ValueError, match="ONNX pads"):
            Pads.from_onnx(bad)


def test_pads_between_rects():
    have, need = Rect(2, 10, 0, 8), Rect(1, 9, -1, 10)
    p = Pads.between(have, need)
    assert p == Pads(top=1, left=1, bottom=-1, right=2)  # add a row on top, drop one at the bottom
    assert have.padded(p) == need and need.padded(Pads.between(need, have)) == have
    assert Pads.between(have, have).is_zero


def test_load_names_the_shape_it_expects():
    assert Pads.load({"top": 1, "left": 0, "bottom": 2, "right": 0}) == Pads(1, 0, 2, 0)
    assert Pads.load(Pads(1, 2, 3, 4)) == Pads(1, 2, 3, 4)
    with pytest.raises(KeyError):
        Pads.load({"top": 1})
    with pytest.raises(ValueError):
        Pads.load([1, 2, 3])


def test_window_interval_clips_and_pads():
    from tinydet.geometry import window_interval

    # 3x3 stride 2 pad 1 on 9 pixels: output 0..5 reads -1..9 -> clipped 0..9, one pad each side
    assert window_interval(0, 5, 3, 2, 1, 9) == (0, 9, 1, 1)
    assert window_interval(2, 4, 3, 2, 1, 9) == (3, 8, 0, 0)
    assert conv_out_size(9, 3, 2, 1, 1) == 5


def test_parse_size_pair():
    from tinydet.errors import TinydetError
    from tinydet.geometry import parse_size_pair

    for value, want in ((4, (4, 4)), ("4", (4, 4)), ("2x3", (2, 3)), ("2X3", (2, 3)), ("160,192", (160, 192)),
                        ((2, 3), (2, 3)), ([5, 1], (5, 1))):
        assert parse_size_pair(value, "grid", "N or RxC") == want
    for bad in ("2x3x4", "a", (1, 2, 3), True, None, 2.5j):
        with pytest.raises(TinydetError, match=r"^grid: expected N or RxC, got "):
            parse_size_pair(bad, "grid", "N or RxC")
    with pytest.raises(TinydetError, match="grid: expected positive sizes, got 0x3"):
        parse_size_pair("0x3", "grid", "N or RxC")
