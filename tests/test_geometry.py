"""tinydet.geometry: named pads, their conversions, one output-size rule and the window interval."""
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
