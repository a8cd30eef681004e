"""Data package: synthetic generator layouts, loaders, letterbox/augmentation, DataModule, anchors."""
from __future__ import annotations

import hashlib
import io
import json
import os
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout

import cv2
import numpy as np
import pytest
import torch

from tinydet.data.anchors import anchor_stats, kmeans_anchors, network_box_sizes, split_by_scale, wh_iou
from tinydet.data.datamodule import DetectionDataModule, DetectionDataset, collate_detection
from tinydet.data.records import DATA_DEFAULTS, load_records, resolve_data_cfg
from tinydet.data.synth import DEFAULT_CLASSES, WIDER_LEVELS, synth_voc, synth_wider
from tinydet.data.transforms import (
    AUGMENT_DEFAULTS, build_train_transform, letterbox_boxes, letterbox_image, prepare_sample,
    resolve_augment, unletterbox,
)
from tinydet.data.wider import parse_wider_gt
from tinydet.errors import TinydetError

CLASSES = list(DEFAULT_CLASSES)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    synth_voc(root, 40, seed=0, size=160, year=2007)
    synth_voc(root, 16, seed=1, size=160, year=2012)
    return root


@pytest.fixture(scope="module")
def wider_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("wider"))
    synth_wider(root, 48, seed=0, size=192)
    return root


def voc_cfg(root, **kw):
    cfg = {"format": "voc", "root": root, "train": [[2007, "train"]], "val": [[2007, "val"]],
           "test": [[2007, "test"]], "classes": CLASSES}
    cfg.update(kw)
    return cfg


def _ids(path):
    with open(path) as fh:
        return [line.split()[0] for line in fh if line.strip()]


# ---------------------------------------------------------------------------------------------
# generator layout
# ---------------------------------------------------------------------------------------------
def test_voc_layout_parses_back(voc_root):
    base = os.path.join(voc_root, "VOC2007")
    main = os.path.join(base, "ImageSets", "Main")
    all_ids = sorted(f[:-4] for f in os.listdir(os.path.join(base, "Annotations")))
    assert len(all_ids) == 40 and all_ids[0] == "000001"
    n_obj = 0
    names = set()
    for image_id in all_ids:
        root = ET.parse(os.path.join(base, "Annotations", f"{image_id}.xml")).getroot()
        assert root.tag == "annotation" and root.findtext("folder") == "VOC2007"
        assert root.findtext("filename") == f"{image_id}.jpg"
        assert root.find("source/database").text == "The VOC2007 Database"
        assert root.findtext("segmented") == "0"
        w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
        assert int(root.findtext("size/depth")) == 3
        img = cv2.imread(os.path.join(base, "JPEGImages", f"{image_id}.jpg"))
        assert img.shape == (h, w, 3) and max(h, w) == 160
        for obj in root.findall("object"):
            n_obj += 1
            names.add(obj.findtext("name"))
            assert obj.findtext("pose") and obj.findtext("truncated") in "01" and obj.findtext("difficult") in "01"
            x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h  # 1-based inclusive, as the devkit
    assert names == set(CLASSES) and n_obj > 60
    train, val, test, trainval = (_ids(os.path.join(main, f"{s}.txt")) for s in ("train", "val", "test", "trainval"))
    assert sorted(train + val) == trainval and not set(train) & set(val)
    assert not set(trainval) & set(test) and sorted(trainval + test) == all_ids
    # per-class files: 1 = a non-difficult instance, 0 = only difficult ones, -1 = none
    for cls in CLASSES:
        with open(os.path.join(main, f"{cls}_trainval.txt")) as fh:
            rows = [line.split() for line in fh]
        assert [r[0] for r in rows] == trainval
        for image_id, flag in rows:
            objs = ET.parse(os.path.join(base, "Annotations", f"{image_id}.xml")).getroot().findall("object")
            mine = [o.findtext("difficult") == "1" for o in objs if o.findtext("name") == cls]
            assert int(flag) == (1 if (False in mine) else (0 if mine else -1))
    # 2012 has no public test split
    assert not os.path.exists(os.path.join(voc_root, "VOC2012", "ImageSets", "Main", "test.txt"))
    assert _ids(os.path.join(voc_root, "VOC2012", "ImageSets", "Main", "trainval.txt"))[0].startswith("2012_")


def test_voc_objects_are_varied(voc_root):
    records, _, _ = load_records(voc_cfg(voc_root, train=[[2007, "trainval"], [2007, "test"]]), "train")
    boxes = np.concatenate([r.boxes for r in records])
    sides = (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    assert sides.min() <= 12 and sides.max() >= 60  # tiny and large objects
    difficult = np.concatenate([r.difficult for r in records])
    truncated = np.concatenate([r.extra["truncated"] for r in records])
    assert 0 < difficult.sum() < 0.5 * len(difficult) and truncated.sum() > 0
    overlaps = sum(int((np.triu(_pair_iou(r.boxes), 1) > 0).sum()) for r in records)
    assert overlaps > 0


def _pair_iou(b):
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area[:, None] + area[None] - inter)


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for f in sorted(filenames):
            h.update(os.path.relpath(os.path.join(dirpath, f), root).encode())
            with open(os.path.join(dirpath, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_generators_are_deterministic_per_seed(tmp_path):
    for name, fn in (("voc", synth_voc), ("wider", synth_wider)):
        a, b, c = (str(tmp_path / f"{name}{i}") for i in range(3))
        fn(a, 6, seed=5, size=96)
        fn(b, 6, seed=5, size=96)
        fn(c, 6, seed=6, size=96)
        assert _tree_digest(a) == _tree_digest(b)
        assert _tree_digest(a) != _tree_digest(c)
        assert not [f for f in os.listdir(a) if f.startswith(".synth-")]  # no staging leftovers


def test_synth_refuses_to_overwrite_and_rejects_unknown_class(tmp_path):
    synth_voc(str(tmp_path), 2, seed=0, size=64)
    with pytest.raises(TinydetError, match="already exists"):
        synth_voc(str(tmp_path), 2, seed=0, size=64)
    synth_voc(str(tmp_path), 3, seed=0, size=64, overwrite=True)
    assert len(os.listdir(tmp_path / "VOC2007" / "JPEGImages")) == 3
    with pytest.raises(TinydetError, match="did you mean 'circle'"):
        synth_voc(str(tmp_path / "x"), 2, classes=["circel"])


def test_wider_layout_and_official_gt(wider_root):
    from scipy.io import loadmat

    for split in ("train", "val"):
        gt = os.path.join(wider_root, "wider_face_split", f"wider_face_{split}_bbx_gt.txt")
        with open(gt) as fh:
            lines = fh.read().splitlines()
        entries = parse_wider_gt(gt, _strict())
        for name, line, faces in entries:
            assert lines[line - 1] == name and int(lines[line]) == len(faces)
            event = name.split("/")[0]
            assert event.split("--")[0].isdigit()
            img = cv2.imread(os.path.join(wider_root, f"WIDER_{split}", "images", name))
            assert img is not None
            if len(faces):
                assert (faces[:, 0] >= 0).all() and (faces[:, 0] + faces[:, 2] <= img.shape[1]).all()
                assert lines[line + 1].endswith(" ") and len(lines[line + 1].split()) == 10
            else:  # the official file writes one all-zero line after a 0 count
                assert lines[line + 1].split() == ["0"] * 10
    train = parse_wider_gt(os.path.join(wider_root, "wider_face_split", "wider_face_train_bbx_gt.txt"), _strict())
    val = parse_wider_gt(os.path.join(wider_root, "wider_face_split", "wider_face_val_bbx_gt.txt"), _strict())
    assert len(train) + len(val) == 48 and any(len(f) == 0 for _, _, f in train + val)
    heights = np.concatenate([f[:, 3] for _, _, f in train + val])
    assert (heights < 16).mean() > 0.3 and heights.max() > 40  # many tiny faces, some large

    gt_dir = os.path.join(wider_root, "eval_tools", "ground_truth")
    full = loadmat(os.path.join(gt_dir, "wider_face_val.mat"))
    levels = {lv: loadmat(os.path.join(gt_dir, f"wider_{lv}_val.mat")) for lv in ("easy", "medium", "hard")}
    events = full["event_list"]
    assert events.ndim == 2 and events.shape[1] == 1 and full["file_list"].shape == events.shape
    val_by_name = {name: faces for name, _, faces in val}
    seen = 0
    counts = {lv: 0 for lv in levels}
    for i in range(len(events)):
        event = events[i][0][0]  # the official evaluation's indexing
        files = full["file_list"][i][0]
        for j in range(len(files)):
            name = f"{event}/{files[j][0][0]}.jpg"
            faces = val_by_name[name]
            seen += 1
            bbx = full["face_bbx_list"][i][0][j][0]
            assert bbx.shape == (len(faces), 4) and np.array_equal(bbx, faces[:, :4])
            invalid = full["invalid_label_list"][i][0][j][0].ravel()
            assert np.array_equal(invalid, faces[:, 7])
            sets = {}
            for lv, mat in levels.items():
                assert mat["event_list"][i][0][0] == event and mat["file_list"][i][0][j][0][0] == files[j][0][0]
                idx = mat["gt_list"][i][0][j][0].ravel().astype(int)
                assert ((idx >= 1) & (idx <= len(faces))).all()  # 1-based face indices
                sets[lv] = set(idx.tolist())
                counts[lv] += len(idx)
            assert sets["easy"] <= sets["medium"] <= sets["hard"]
            assert not {k + 1 for k in np.flatnonzero(faces[:, 7])} & sets["hard"]  # invalid never counted
            long_side = max(cv2.imread(os.path.join(wider_root, "WIDER_val", "images", name)).shape[:2])
            for k in sets["easy"]:
                f = faces[k - 1]
                assert f[3] >= WIDER_LEVELS["easy"]["min_height"] * long_side and f[8] == 0 and f[4] <= 1
    assert seen == len(val)
    assert 0 < counts["easy"] < counts["medium"] < counts["hard"]


def _strict():
    from tinydet.data.records import BadInput, BadInputSummary

    return BadInput(False, BadInputSummary())


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def test_voc_07_plus_12_join_and_coordinates(voc_root):
    cfg = voc_cfg(voc_root, train=[[2007, "trainval"], [2012, "trainval"]])
    records, names, summary = load_records(cfg, "train", "t.yaml")
    assert names == CLASSES and summary.total == 0
    ids07 = _ids(os.path.join(voc_root, "VOC2007", "ImageSets", "Main", "trainval.txt"))
    ids12 = _ids(os.path.join(voc_root, "VOC2012", "ImageSets", "Main", "trainval.txt"))
    assert [r.image_id for r in records] == ids07 + ids12
    assert {r.extra["year"] for r in records} == {"2007", "2012"}
    n_difficult = 0
    for rec in records:
        root = ET.parse(os.path.join(voc_root, f"VOC{rec.extra['year']}", "Annotations",
                                     f"{rec.image_id}.xml")).getroot()
        objs = root.findall("object")
        assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64 and rec.difficult.dtype == bool
        xml_boxes = np.array([[float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
                              for o in objs]).reshape(-1, 4)
        # 1-based inclusive -> 0-based pixel edges
        np.testing.assert_array_equal(rec.boxes, xml_boxes - [1, 1, 0, 0])
        assert [CLASSES[i] for i in rec.labels] == [o.findtext("name") for o in objs]
        assert rec.difficult.tolist() == [o.findtext("difficult") == "1" for o in objs]
        n_difficult += int(rec.difficult.sum())
        assert (rec.width, rec.height) == (int(root.findtext("size/width")), int(root.findtext("size/height")))
    assert n_difficult > 0  # difficult boxes are kept (flagged) in the records


def test_wider_loader_drops_invalid_and_small(wider_root):
    recs, names, _ = load_records({"format": "wider", "root": wider_root}, "val")
    assert names == ["face"]
    gt = parse_wider_gt(os.path.join(wider_root, "wider_face_split", "wider_face_val_bbx_gt.txt"), _strict())
    assert [r.image_id for r in recs] == [n[:-4] for n, _, _ in gt]
    for rec, (_, _, faces) in zip(recs, gt):
        valid = faces[faces[:, 7] == 0]
        assert len(rec.boxes) == len(valid)
        np.testing.assert_array_equal(rec.boxes, np.c_[valid[:, :2], valid[:, :2] + valid[:, 2:4]])
        assert (rec.extra["invalid"] == 0).all() and rec.extra["event"] == rec.image_id.split("/")[0]
    all_train, _, _ = load_records({"format": "wider", "root": wider_root}, "train")
    big_train, _, _ = load_records({"format": "wider", "root": wider_root, "min_size": 10}, "train")
    n_all = sum(len(r.boxes) for r in all_train)
    n_big = sum(len(r.boxes) for r in big_train)
    wh = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in all_train])
    assert n_big == int((wh >= 10).all(axis=1).sum()) < n_all
    # min_size is a training filter: val keeps all valid faces
    val_big, _, _ = load_records({"format": "wider", "root": wider_root, "min_size": 10}, "val")
    assert sum(len(r.boxes) for r in val_big) == sum(len(r.boxes) for r in recs)


def test_data_cfg_defaults_and_errors():
    assert set(DATA_DEFAULTS) >= {"format", "root", "train", "val", "test", "classes", "skip_bad", "min_size",
                                  "keep_difficult"}
    cfg = resolve_data_cfg({"format": "voc"})
    assert cfg["train"] == [[2007, "trainval"], [2012, "trainval"]] and len(cfg["classes"]) == 20
    assert resolve_data_cfg({"format": "wider"})["classes"] == ["face"]
    with pytest.raises(TinydetError, match=r"x\.yaml: unknown key data\.skipbad \(did you mean 'skip_bad'\?\)"):
        resolve_data_cfg({"skipbad": True}, "x.yaml")
    with pytest.raises(TinydetError, match="data.format is 'kitti'"):
        resolve_data_cfg({"format": "kitti"})
    with pytest.raises(TinydetError, match=r"x.yaml: data.classes is not set and cannot be read from the set "
                                           r"\(.*instances_train.json: COCO annotation file does not exist\)"):
        resolve_data_cfg({"format": "coco", "root": "/nonexistent"}, "x.yaml")
    with pytest.raises(TinydetError, match=r"data\.train entry"):
        resolve_data_cfg({"train": [2007]})
    with pytest.raises(TinydetError, match=r"augment\.flip .*'hflip'"):
        resolve_augment({"flip": 0.5})
    with pytest.raises(TinydetError, match=r"data\.augment\.hflip must be a number in \[0, 1\], got 'yes'"):
        resolve_augment({"hflip": "yes"})
    with pytest.raises(TinydetError, match=r"data\.augment\.scale"):
        resolve_augment({"scale": [1.5, 0.5]})
    assert resolve_augment(False)["enabled"] is False and resolve_augment(None) == AUGMENT_DEFAULTS


# ---------------------------------------------------------------------------------------------
# letterbox / augmentation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orig,size", [((100, 200), (128, 128)), ((300, 120), (96, 160)), ((64, 64), 64)])
def test_letterbox_unletterbox_round_trip(orig, size):
    rng = np.random.default_rng(0)
    h, w = orig
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    chw, meta = letterbox_image(img, size)
    H, W = (size, size) if isinstance(size, int) else size
    assert chw.shape == (3, H, W) and chw.dtype == np.float32 and 0 <= chw.min() and chw.max() <= 1
    left, top = meta["pad"]
    assert meta["orig_size"] == (h, w) and abs(round(w * meta["scale"]) + 2 * left - W) <= 1
    if left:  # padding is grey 114
        assert np.allclose(chw[:, :, :left], 114 / 255)
    if top:
        assert np.allclose(chw[:, :top, :], 114 / 255)
    xy = rng.uniform(0, 1, (20, 2)) * [w, h]
    wh = rng.uniform(0.02, 0.5, (20, 2)) * [w, h]
    boxes = np.clip(np.c_[xy, xy + wh], 0, [w, h, w, h]).astype(np.float32)
    net = letterbox_boxes(boxes, meta)
    # boxes land on the resized content (within the half pixel of rounding its size)
    nw, nh = round(w * meta["scale"]), round(h * meta["scale"])
    assert (net[:, [0, 2]] >= left - 1e-4).all() and (net[:, [0, 2]] <= left + nw + 0.5).all()
    assert (net[:, [1, 3]] >= top - 1e-4).all() and (net[:, [1, 3]] <= top + nh + 0.5).all()
    np.testing.assert_allclose(unletterbox(net, meta), boxes, atol=1e-3)
    back = unletterbox(torch.from_numpy(net), meta)
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(back.numpy(), boxes, atol=1e-3)
    # content lands where the boxes say: a bright square maps onto its letterboxed box
    sq = np.zeros((h, w, 3), np.uint8)
    sq[h // 4:h // 2, w // 4:w // 2] = 255
    chw, meta = letterbox_image(sq, size)
    nb = letterbox_boxes(np.array([[w // 4, h // 4, w // 2, h // 2]]), meta)[0]
    ys, xs = np.nonzero(chw[0] > 0.5)
    assert abs(xs.min() - nb[0]) <= 1.5 and abs(xs.max() + 1 - nb[2]) <= 1.5
    assert abs(ys.min() - nb[1]) <= 1.5 and abs(ys.max() + 1 - nb[3]) <= 1.5


def test_augmentation_moves_boxes_with_the_content():
    """After scale/crop/flip the target boxes still frame the (single) bright square."""
    aug = resolve_augment({"color_p": 0.0, "scale": [0.5, 1.6], "translate": 0.25, "affine_p": 1.0,
                           "min_visibility": 0.6})
    tf = build_train_transform(aug, seed=3)
    img = np.zeros((120, 180, 3), np.uint8)
    x0, y0, x1, y1 = 50, 30, 110, 80
    img[y0:y1, x0:x1] = 255
    kept = flipped = 0
    for _ in range(30):
        chw, boxes, labels, diff, _ = prepare_sample(img, np.array([[x0, y0, x1, y1]]), np.array([2]),
                                                     np.array([False]), (96, 128), tf, aug)
        assert chw.shape == (3, 96, 128)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= aug["min_box_size"]).all()
        bright = chw[0] > 0.75
        if len(boxes):
            kept += 1
            assert labels.tolist() == [2] and diff.tolist() == [False]
            ys, xs = np.nonzero(bright)
            np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], boxes[0], atol=2.5)
        else:  # dropped only when the crop left less than min_visibility of it
            assert bright.sum() < 0.6 * (x1 - x0) * (y1 - y0) * (96 / 120) ** 2 * 1.6 ** 2
        flipped += len(boxes) and (boxes[0, 0] + boxes[0, 2]) / 2 < 64
    assert kept >= 15 and flipped >= 3  # the pipeline really moves and flips things


def test_augmentation_keeps_boxes_valid_on_generated_data(voc_root):
    records, _, _ = load_records(voc_cfg(voc_root), "train")
    ds = DetectionDataset(records, (128, 160), train=True, augment=resolve_augment({}), keep_difficult=False, seed=0)
    n_boxes = 0
    for i in range(len(ds)):
        s = ds[i]
        b = s["target"]["boxes"]
        assert s["image"].shape == (3, 128, 160)
        assert ((b[:, 2:] - b[:, :2]) >= AUGMENT_DEFAULTS["min_box_size"]).all()
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 160).all() and (b[:, 3] <= 128).all()
        assert not s["target"]["difficult"].any()  # keep_difficult false drops them from training
        n_boxes += len(b)
    assert n_boxes > 0.5 * sum(len(r.boxes) for r in records)


# ---------------------------------------------------------------------------------------------
# DataModule
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 1])
def test_datamodule_batches(voc_root, workers):
    dm = DetectionDataModule(voc_cfg(voc_root, keep_difficult=False), (96, 128), batch_size=5,
                             num_workers=workers, seed=0)
    dm.setup("fit")
    assert dm.class_names == CLASSES
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (5, 3, 96, 128) and batch["images"].dtype == torch.float32
    assert 0.0 <= float(batch["images"].min()) and float(batch["images"].max()) <= 1.0
    for t in batch["targets"]:
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert t["labels"].dtype == torch.int64 and t["difficult"].dtype == torch.bool
        assert len(t["boxes"]) == len(t["labels"]) == len(t["difficult"])
    val_ids, val_diff = [], 0
    for batch in dm.val_dataloader():
        for t, m, in zip(batch["targets"], batch["meta"]):
            rec = dm.val_records[len(val_ids)]
            assert m["image_id"] == rec.image_id and m["orig_size"] == (rec.height, rec.width)
            # eval targets are the records, letterboxed: unletterbox gives them back exactly
            np.testing.assert_allclose(unletterbox(t["boxes"].numpy(), m), rec.boxes, atol=1e-3)
            val_ids.append(m["image_id"])
            val_diff += int(t["difficult"].sum())
    assert val_ids == [r.image_id for r in dm.val_records]
    assert val_diff == sum(int(r.difficult.sum()) for r in dm.val_records)


def test_train_loader_is_reproducible_per_seed(voc_root):
    def first(seed):
        dm = DetectionDataModule(voc_cfg(voc_root), 64, batch_size=4, seed=seed)
        b = next(iter(dm.train_dataloader()))
        return b["images"], [m["image_id"] for m in b["meta"]]

    a, b, c = first(1), first(1), first(2)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert a[1] != c[1] or not torch.equal(a[0], c[0])


def test_collate_keeps_variable_box_counts():
    samples = [{"image": torch.zeros(3, 8, 8), "meta": {"image_id": str(i)},
                "target": {"boxes": torch.zeros(i, 4), "labels": torch.zeros(i, dtype=torch.int64),
                           "difficult": torch.zeros(i, dtype=torch.bool)}} for i in range(3)]
    batch = collate_detection(samples)
    assert batch["images"].shape == (3, 3, 8, 8) and [len(t["boxes"]) for t in batch["targets"]] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# anchors
# ---------------------------------------------------------------------------------------------
def test_kmeans_recovers_known_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[8, 10], [30, 20], [60, 90]], float)
    wh = np.concatenate([c * rng.uniform(0.97, 1.03, (50, 2)) for c in centres])
    anchors = kmeans_anchors(wh, 3, seed=0)
    np.testing.assert_allclose(anchors, centres, rtol=0.04)
    assert (np.diff(anchors.prod(1)) > 0).all()
    assert split_by_scale(anchors, 3)[0][0] == [round(anchors[0, 0], 2), round(anchors[0, 1], 2)]
    with pytest.raises(TinydetError, match="multiple"):
        split_by_scale(anchors, 2)
    np.testing.assert_allclose(wh_iou(np.array([[2.0, 2.0]]), np.array([[1.0, 4.0]])), [[2 / 6]])


def test_anchors_on_generated_data(wider_root):
    records, _, _ = load_records({"format": "wider", "root": wider_root}, "train")
    wh = network_box_sizes(records, 320)
    anchors = kmeans_anchors(wh, 6, seed=0)
    assert anchors.shape == (6, 2) and (np.diff(anchors.prod(1)) >= 0).all()
    fit = anchor_stats(wh, anchors)
    # k-means beats spreading the same number of square anchors evenly over the size range
    grid = np.geomspace(wh.min(), wh.max(), 6)[:, None].repeat(2, 1)
    assert fit["mean_best_iou"] > anchor_stats(wh, grid)["mean_best_iou"] and fit["mean_best_iou"] > 0.65


def test_cli_synth_and_anchors_json(tmp_path, voc_root):
    from tinydet.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["data", "synth", "--format", "voc", "--out", str(tmp_path), "--images", "3", "--size", "64", "--json"])
    assert rc == 0
    result = json.loads(out.getvalue())
    assert result["images"] == 3 and result["splits"]["trainval"] + result["splits"]["test"] == 3
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["data", "anchors", "--root", voc_root, "--k", "4", "--scales", "2", "--resolution", "128", "--json"])
    assert rc == 0
    result = json.loads(out.getvalue())
    assert len(result["anchors"]) == 2 and len(result["anchors"][0]) == 2 and result["resolution"] == [128, 128]
    trainval = sum(len(_ids(os.path.join(voc_root, f"VOC{y}", "ImageSets", "Main", "trainval.txt"))) for y in (2007, 2012))
    assert result["images"] == trainval  # VOC2007 and VOC2012 trainval both found under the root


def test_loaders_accept_lightnings_distributed_sampler(voc_root):
    """Under DDP Lightning rebuilds our DataLoaders with a DistributedSampler; the ranks then see
    disjoint shards of the train set and batches keep their dict form."""
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data.distributed import DistributedSampler

    dm = DetectionDataModule(voc_cfg(voc_root), 64, batch_size=4, seed=0)
    loader = dm.train_dataloader()
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        shard = _update_dataloader(loader, sampler)
        ids = [m["image_id"] for batch in shard for m in batch["meta"]]
        assert shard.collate_fn is loader.collate_fn and len(ids) == len(loader.dataset) // 2
        seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == {r.image_id for r in dm.train_records}
