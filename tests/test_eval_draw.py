import numpy as np
from PIL import Image

from tinydet.eval.draw import PALETTE, draw_detections


def test_draw_detections_marks_boxes_above_threshold(tmp_path):
    src = tmp_path / "img.jpg"
    Image.new("RGB", (100, 80), (0, 0, 0)).save(src)
    out = draw_detections(src, np.array([[10, 10, 50, 40], [60, 20, 90, 70]]), np.array([0.9, 0.1]),
                          np.array([1, 0]), ["a", "b"], tmp_path / "o.png", gt_boxes=np.array([[5, 5, 95, 75]]))
    pixels = np.asarray(Image.open(out))
    assert tuple(pixels[25, 10]) == PALETTE[1]          # left edge of the kept box
    assert tuple(pixels[45, 60]) == (0, 0, 0)           # low-score box not drawn
    assert tuple(pixels[40, 5]) == (255, 255, 255)      # ground truth drawn
