"""Detector, loss, decode and NMS on hand-made tensors."""
import numpy as np
import pytest
import torch

from tinydet.arch import get_spec, lower
from tinydet.errors import TinydetError
from tinydet.models.decode import decode, postprocess
from tinydet.models.detector import Detector, head_strides
from tinydet.models.loss import YoloLoss, bbox_iou

ANCHORS = [[[10, 14], [23, 27], [37, 58]], [[81, 82], [135, 169], [344, 319]]]


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_detector_module_paths_and_shapes_match_the_op_list():
    spec = get_spec("mbv2-w0.35")
    model = Detector(spec, 3, ANCHORS, head_channels=16, input_size=96)
    graph = lower(spec, 96, head=model.head_spec)
    names = dict(model.named_modules())
    for op in graph.ops:
        assert op.name in names, op.name
    outs = model(torch.rand(2, 3, 96, 96))
    assert [tuple(o.shape) for o in outs] == [(2,) + graph.tensors[n].shape for n in graph.outputs]
    assert model.strides.tolist() == head_strides(spec) == [16, 32]
    assert "anchors" in model.state_dict() and "strides" in model.state_dict()


def test_detector_rejects_anchor_scales_that_do_not_match_the_arch():
    with pytest.raises(TinydetError, match="2 head maps"):
        Detector(get_spec("mbv2-w0.35"), 3, ANCHORS[:1])


def _hand_made_map(num_anchors=2, num_classes=3, h=4, w=5):
    """All anchors at logit -10 (score ~ 0) except one chosen cell/anchor."""
    per = 5 + num_classes
    m = np.full((1, num_anchors * per, h, w), -10.0, dtype=np.float32)
    # anchor 1 at cell (gy=2, gx=3): sig(tx)=0.5 -> cx = (1 - 0.5 + 3) * 8 = 28
    # sig(ty)=0.75 -> cy = (1.5 - 0.5 + 2) * 8 = 24; sig(tw)=0.5 -> w = anchor_w; sig(th)=0.75 -> h = 2.25*anchor_h
    a, c = 1, 1
    base = a * per
    m[0, base + 0, 2, 3] = 0.0
    m[0, base + 1, 2, 3] = _logit(0.75)
    m[0, base + 2, 2, 3] = 0.0
    m[0, base + 3, 2, 3] = _logit(0.75)
    m[0, base + 4, 2, 3] = _logit(0.9)
    m[0, base + 5 + c, 2, 3] = _logit(0.8)
    return m


def test_decode_hand_made_map_gives_the_expected_box_numpy_and_torch():
    anchors = [[[4, 4], [10, 6]]]
    m = _hand_made_map()
    expected = np.array([[28 - 5, 24 - 6.75, 28 + 5, 24 + 6.75]], dtype=np.float32)
    boxes, scores, labels = decode([m], anchors, [8], (32, 40), conf_thresh=0.1)[0]
    np.testing.assert_allclose(boxes, expected, atol=1e-4)
    np.testing.assert_allclose(scores, [0.72], atol=1e-5)
    assert labels.tolist() == [1]
    tb, ts, tl = decode([torch.from_numpy(m)], torch.tensor(anchors, dtype=torch.float32), [8], (32, 40), 0.1)[0]
    assert isinstance(tb, torch.Tensor)
    np.testing.assert_allclose(tb.numpy(), expected, atol=1e-4)
    assert tl.tolist() == [1]


def test_decode_clips_boxes_to_the_input():
    m = _hand_made_map()
    boxes, _, _ = decode([m], [[[4, 4], [200, 200]]], [8], (32, 40), conf_thresh=0.1)[0]
    assert boxes.min() >= 0 and boxes[0, 2] == 40 and boxes[0, 3] == 32


def test_torch_and_numpy_decode_and_nms_agree():
    rng = np.random.default_rng(0)
    outs = [rng.normal(0, 2, (2, 3 * 9, 6, 6)).astype(np.float32), rng.normal(0, 2, (2, 3 * 9, 3, 3)).astype(np.float32)]
    np_dets = postprocess(outs, ANCHORS, [16, 32], (96, 96), conf_thresh=0.05, nms_iou=0.5, max_det=50)
    t_dets = postprocess([torch.from_numpy(o) for o in outs], torch.tensor(ANCHORS, dtype=torch.float32),
                         [16, 32], (96, 96), conf_thresh=0.05, nms_iou=0.5, max_det=50)
    for (nb, ns, nl), (tb, ts, tl) in zip(np_dets, t_dets):
        assert len(ns) > 5
        np.testing.assert_allclose(nb, tb.numpy(), atol=1e-4)
        np.testing.assert_allclose(ns, ts.numpy(), atol=1e-6)
        np.testing.assert_array_equal(nl, tl.numpy())


def test_bbox_iou_variants():
    a = torch.tensor([[5.0, 5.0, 10.0, 10.0]])
    assert bbox_iou(a, a, "ciou").item() == pytest.approx(1.0, abs=1e-5)
    b = torch.tensor([[25.0, 5.0, 10.0, 10.0]])  # disjoint: IoU 0, GIoU negative
    assert bbox_iou(a, b, "iou").item() == pytest.approx(0.0, abs=1e-6)
    assert bbox_iou(a, b, "giou").item() == pytest.approx(-1 / 3, abs=1e-4)
    assert bbox_iou(a, b, "ciou").item() < 0


def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = Detector(get_spec("mbv2-w0.35"), 3, ANCHORS, head_channels=16, input_size=64)
    images = torch.rand(4, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 30.0, 60.0, 58.0]]), "labels": torch.tensor([0, 2])},
               {"boxes": torch.tensor([[10.0, 10.0, 50.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    loss_fn = YoloLoss(model.anchors, model.strides.tolist(), 3, (64, 64))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for _ in range(60):
        loss, parts = loss_fn(model(images), targets)
        assert set(parts) == {"box", "obj", "cls"}
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.4 * first


def test_loss_assigns_neighbour_cells_and_handles_empty_images():
    model = Detector(get_spec("mbv2-w0.35"), 2, ANCHORS, head_channels=16, input_size=64)
    loss_fn = YoloLoss(model.anchors, model.strides.tolist(), 2, (64, 64))
    outs = model(torch.rand(2, 3, 64, 64))
    # centre (22, 22) at stride 16 = (1.375, 1.375): the centre cell plus the left and upper neighbours
    targets = [{"boxes": torch.tensor([[12.0, 10.0, 32.0, 34.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}]
    built = loss_fn.build_targets(outs, targets)
    b, a, gj, gi, tbox, anchor, tcls = built[0]
    cells = {(int(j), int(i)) for j, i in zip(gj, gi)}
    assert cells == {(1, 1), (1, 0), (0, 1)}
    assert set(b.tolist()) == {0} and set(tcls.tolist()) == {1}
    total, _ = loss_fn(outs, [targets[1], targets[1]])
    assert torch.isfinite(total) and total.item() > 0


def test_class_targets_sit_where_decode_reads_the_class():
    """The loss's class target of an object lies on the channels a*(5+C)+5+c, image, row and column
    that decode reads back for that object (a non-square map and a second image catch x/y or
    batch-index swaps): a map whose class logits say 'class 2' on the object's cells only has
    near-zero class loss for label 2 and a large one for any other label, and decodes to label 2."""
    num_anchors, num_classes, stride, (h, w) = 2, 3, 8, (32, 48)
    per = 5 + num_classes
    anchors = [[[8.0, 8.0], [16.0, 16.0]]]
    m = np.full((2, num_anchors * per, h // stride, w // stride), -8.0, dtype=np.float32)
    for a in range(num_anchors):
        m[:, a * per + 5 + 0] = 8.0  # everywhere else: class 0
        m[1, a * per + 5 + 0, 0:2, 2:4] = -8.0  # image 1, rows 0-1, columns 2-3: the object's cells
        m[1, a * per + 5 + 2, 0:2, 2:4] = 8.0
    m[1, 0 * per + 4, 1, 3] = 8.0  # one confident anchor at the object's centre cell
    m[1, 0 * per + 0:0 * per + 4, 1, 3] = 0.0
    # centre (26, 10) -> grid (3.25, 1.25): centre cell (row 1, col 3) and neighbours (1, 2), (0, 3)
    box = torch.tensor([[22.0, 6.0, 30.0, 14.0]])
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}
    loss_fn = YoloLoss(torch.tensor(anchors), [stride], num_classes, (h, w))
    outs = [torch.from_numpy(m)]
    cls_loss = {c: loss_fn(outs, [empty, {"boxes": box, "labels": torch.tensor([c])}])[1]["cls"].item()
                for c in range(num_classes)}
    assert cls_loss[2] < 0.01 * loss_fn.cls_gain
    assert min(cls_loss[0], cls_loss[1]) > 100 * cls_loss[2]
    boxes, scores, labels = decode([m], anchors, [stride], (h, w), conf_thresh=0.5)[1]
    assert labels.tolist() == [2]
    # sig(0) = 0.5: centre (1 - 0.5 + 3, 1 - 0.5 + 1) * 8 = (28, 12), size = anchor 0 (8 x 8)
    np.testing.assert_allclose(boxes, [[24.0, 8.0, 32.0, 16.0]], atol=1e-4)
