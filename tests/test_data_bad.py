"""Bad input (issue 4, point 8): each case is a one-line error naming the file and line/field, or,
with ``skip_bad: true``, skipped and counted in the BadInputSummary logged once to stderr."""
from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET

import cv2
import pytest

from tinydet.data.datamodule import DetectionDataset
from tinydet.data.records import load_records
from tinydet.data.synth import DEFAULT_CLASSES, synth_voc, synth_wider
from tinydet.data.transforms import resolve_augment
from tinydet.errors import TinydetError

CLASSES = list(DEFAULT_CLASSES)


@pytest.fixture(scope="module")
def voc_base(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vocbase"))
    synth_voc(root, 12, seed=2, size=96, year=2007)
    synth_voc(root, 6, seed=3, size=96, year=2012)
    return root


@pytest.fixture(scope="module")
def wider_base(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("widerbase"))
    synth_wider(root, 12, seed=2, size=96)
    return root


@pytest.fixture
def voc(voc_base, tmp_path):
    root = str(tmp_path / "voc")
    shutil.copytree(voc_base, root)
    return root


@pytest.fixture
def wider(wider_base, tmp_path):
    root = str(tmp_path / "wider")
    shutil.copytree(wider_base, root)
    return root


def cfg(root, skip=False, train=((2007, "train"),)):
    return {"format": "voc", "root": root, "train": [list(t) for t in train], "val": [[2007, "val"]],
            "test": [[2007, "test"]], "classes": CLASSES, "skip_bad": skip}


def train_ids(root, year=2007):
    with open(os.path.join(root, f"VOC{year}", "ImageSets", "Main", "train.txt")) as fh:
        return [line.strip() for line in fh if line.strip()]


def first_with_objects(root):
    """(annotation path, tree, image id) of the first training image holding at least one object."""
    for image_id in train_ids(root):
        ann = os.path.join(root, "VOC2007", "Annotations", f"{image_id}.xml")
        tree = ET.parse(ann)
        if tree.getroot().findall("object"):
            return ann, tree, image_id
    raise AssertionError("generated set has no object")


def expect(root_cfg, pattern, reason, n_images=None, n_boxes_delta=None, capsys=None):
    """Strict: a TinydetError matching ``pattern``; skip_bad: counted once under ``reason``."""
    with pytest.raises(TinydetError, match=pattern) as info:
        load_records(root_cfg, "train", "t.yaml")
    assert "\n" not in str(info.value)
    good_cfg = dict(root_cfg, skip_bad=True)
    records, _, summary = load_records(good_cfg, "train", "t.yaml")
    assert summary.counts == {reason: 1}
    assert re.search(pattern, summary.examples[reason][0])
    if n_images is not None:
        assert len(records) == n_images
    if capsys is not None:
        err = capsys.readouterr().err
        assert err.count("skipped 1 bad input") == 1 and f"{reason}: 1" in err
    return records


def test_xml_whose_image_is_missing(voc, capsys):
    ann, tree, image_id = first_with_objects(voc)
    jpg = os.path.join(voc, "VOC2007", "JPEGImages", f"{image_id}.jpg")
    os.remove(jpg)
    n = len(train_ids(voc))
    records = expect(cfg(voc), re.escape(f"{ann}: field filename names image {jpg}, which does not exist"),
                     "missing_image", n_images=n - 1, capsys=capsys)
    assert image_id not in {r.image_id for r in records}


def _edit_box(ann, tree, **values):
    box = tree.getroot().find("object/bndbox")
    for key, value in values.items():
        box.find(key).text = str(value)
    tree.write(ann)


def test_box_outside_the_image(voc):
    ann, tree, image_id = first_with_objects(voc)
    width = int(tree.getroot().findtext("size/width"))
    n_obj = len(tree.getroot().findall("object"))
    _edit_box(ann, tree, xmax=width + 5)
    records = expect(cfg(voc), re.escape(f"{ann}: object[0]/bndbox") + r" .* is outside the \d+x\d+ image",
                     "box_outside_image", n_images=len(train_ids(voc)))
    rec = next(r for r in records if r.image_id == image_id)
    assert len(rec.boxes) == n_obj - 1  # only the bad box is dropped
    # within data.clip_tolerance the box is clipped to the image instead
    records, _, summary = load_records(dict(cfg(voc), clip_tolerance=5), "train")
    rec = next(r for r in records if r.image_id == image_id)
    assert summary.total == 0 and len(rec.boxes) == n_obj and rec.boxes[0, 2] == width
    with pytest.raises(TinydetError, match="is outside"):
        load_records(dict(cfg(voc), clip_tolerance=4.9), "train")


def test_box_with_xmax_below_xmin(voc):
    ann, tree, image_id = first_with_objects(voc)
    box = tree.getroot().find("object/bndbox")
    xmax = int(box.findtext("xmax"))
    _edit_box(ann, tree, xmin=xmax + 3)
    expect(cfg(voc), re.escape(f"{ann}: object[0]/bndbox: xmax < xmin"), "box_inverted",
           n_images=len(train_ids(voc)))


def test_unreadable_jpeg(voc):
    image_id = train_ids(voc)[1]
    jpg = os.path.join(voc, "VOC2007", "JPEGImages", f"{image_id}.jpg")
    with open(jpg, "wb") as fh:
        fh.write(b"this is not a JPEG file at all")
    expect(cfg(voc), re.escape(f"{jpg}: unreadable image"), "unreadable_image", n_images=len(train_ids(voc)) - 1)


def test_image_corrupted_after_loading_fails_in_the_dataset(voc):
    records, _, _ = load_records(cfg(voc), "train")
    ds = DetectionDataset(records, 64, train=False, augment=resolve_augment({}))
    with open(records[0].path, "wb") as fh:
        fh.write(b"\xff\xd8garbage")
    with pytest.raises(TinydetError, match=re.escape(f"{records[0].path}: unreadable image")):
        ds[0]
    assert ds[1]["image"].shape == (3, 64, 64)


def _truncate(path):
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:  # a download cut short: no EOI marker, the last rows missing
        fh.write(data[: len(data) * 2 // 3])


def test_truncated_jpeg_is_unreadable_and_counted_with_skip_bad(voc, capsys):
    image_id = train_ids(voc)[2]
    jpg = os.path.join(voc, "VOC2007", "JPEGImages", f"{image_id}.jpg")
    _truncate(jpg)
    records = expect(cfg(voc), re.escape(f"{jpg}: unreadable image (image file is truncated"), "unreadable_image",
                     n_images=len(train_ids(voc)) - 1, capsys=capsys)
    assert image_id not in {r.image_id for r in records}


def test_jpeg_truncated_after_loading_fails_in_the_dataset(voc):
    """OpenCV decodes a truncated JPEG (half grey) with only a warning: __getitem__ must refuse it."""
    records, _, _ = load_records(cfg(voc), "train")
    ds = DetectionDataset(records, 64, train=False, augment=resolve_augment({}))
    _truncate(records[0].path)
    with pytest.raises(TinydetError, match=re.escape(f"{records[0].path}: unreadable image (image file is truncated")):
        ds[0]
    assert ds[1]["image"].shape == (3, 64, 64)


def test_nan_box_counted_with_skip_bad(voc):
    ann, tree, _ = first_with_objects(voc)
    tree.getroot().find("object/bndbox/ymax").text = "NaN"
    tree.write(ann)
    expect(cfg(voc), re.escape(f"{ann}: object[0]/bndbox: expected numeric"), "malformed_xml")


def test_empty_and_missing_split(voc):
    list_file = os.path.join(voc, "VOC2007", "ImageSets", "Main", "train.txt")
    open(list_file, "w").close()
    with pytest.raises(TinydetError, match=re.escape(f"{list_file}: image set of data.train entry [2007, train] is empty")):
        load_records(cfg(voc), "train")
    # skipping an empty set still fails when nothing is left ...
    with pytest.raises(TinydetError, match=r"t\.yaml: data\.train .* holds no usable image"):
        load_records(cfg(voc, skip=True), "train", "t.yaml")
    # ... but a joined 07+12 split keeps the non-empty part and counts the empty one
    joined = cfg(voc, skip=True, train=((2007, "train"), (2012, "train")))
    records, _, summary = load_records(joined, "train")
    assert summary.counts == {"empty_split": 1} and len(records) == len(train_ids(voc, 2012))
    assert all(r.extra["year"] == "2012" for r in records)
    os.remove(list_file)
    with pytest.raises(TinydetError, match=re.escape(f"{list_file}: image set file of data.train entry") + ".*does not exist"):
        load_records(cfg(voc), "train", "t.yaml")


def test_class_not_in_config(voc):
    ann, tree, image_id = first_with_objects(voc)
    tree.getroot().find("object/name").text = "dragon"
    tree.write(ann)
    expect(cfg(voc), re.escape(f"{ann}: object[0]/name 'dragon' is not in data.classes"), "unknown_class",
           n_images=len(train_ids(voc)))
    tree.getroot().find("object/name").text = "circel"
    tree.write(ann)
    with pytest.raises(TinydetError, match=r"did you mean 'circle'"):
        load_records(cfg(voc), "train")


def test_malformed_xml(voc):
    image_id = train_ids(voc)[2]
    ann = os.path.join(voc, "VOC2007", "Annotations", f"{image_id}.xml")
    with open(ann, "w") as fh:
        fh.write("<annotation>\n  <size><width>96</width>\n</annotation>\n")
    expect(cfg(voc), re.escape(f"{ann}: malformed XML") + r".*line 3", "malformed_xml",
           n_images=len(train_ids(voc)) - 1)
    with open(ann, "w") as fh:  # well-formed XML, but a box that is not a number
        fh.write("<annotation><filename>%s.jpg</filename><object><name>star</name><bndbox><xmin>a</xmin>"
                 "</bndbox></object></annotation>" % image_id)
    expect(cfg(voc), re.escape(f"{ann}: object[0]/bndbox: expected numeric"), "malformed_xml")


def _gt(root, split="train"):
    return os.path.join(root, "wider_face_split", f"wider_face_{split}_bbx_gt.txt")


def _rewrite_last_entry(gt, count, faces, tail=()):
    """Replace the last image entry of the gt file by a count line and ``faces`` face lines."""
    with open(gt) as fh:
        lines = fh.read().splitlines()
    last = max(i for i, line in enumerate(lines) if line.endswith(".jpg"))
    name = lines[last]
    lines = lines[:last + 1] + [str(count)] + ["1 1 4 5 0 0 0 0 0 0 "] * faces + list(tail)
    with open(gt, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return name, last + 2  # 1-based line number of the count line


def test_truncated_wider_gt(wider):
    gt = _gt(wider)
    n_images = len(load_records({"format": "wider", "root": wider}, "train")[0])
    name, count_line = _rewrite_last_entry(gt, 5, 3)
    wcfg = {"format": "wider", "root": wider}
    with pytest.raises(TinydetError, match=re.escape(
            f"{gt}:{count_line}: count line says 5 faces for {name} but the file ends after 3")):
        load_records(wcfg, "train")
    records, _, summary = load_records(dict(wcfg, skip_bad=True), "train")
    assert summary.counts == {"truncated_gt": 1} and len(records) == n_images - 1


def test_wider_entry_cut_short_before_the_next_image(wider):
    gt = _gt(wider)
    with open(gt) as fh:
        lines = fh.read().splitlines()
    first_name = lines[0]
    count = int(lines[1])
    # the first image claims two more faces than it lists: the next file name comes too early
    lines[1] = str(count + 2)
    with open(gt, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    listed = max(count, 1)
    with pytest.raises(TinydetError, match=re.escape(
            f"{gt}:2: count line says {count + 2} faces for {first_name} but line {2 + listed + 1} "
            f"starts the next image after {listed}")):
        load_records({"format": "wider", "root": wider}, "train")


def test_wider_missing_image_and_box_outside(wider):
    gt = _gt(wider)
    with open(gt) as fh:
        lines = fh.read().splitlines()
    name = lines[0]
    os.remove(os.path.join(wider, "WIDER_train", "images", name))
    with pytest.raises(TinydetError, match=re.escape(f"{gt}:1: image ") + ".*does not exist"):
        load_records({"format": "wider", "root": wider}, "train")
    shutil.rmtree(os.path.join(wider, "WIDER_train"))
    shutil.copytree(os.path.join(wider, "WIDER_val"), os.path.join(wider, "WIDER_train"))  # keep files valid
    vgt = _gt(wider, "val")
    with open(vgt) as fh:
        lines = fh.read().splitlines()
    k = next(i for i, line in enumerate(lines) if line.endswith(".jpg") and lines[i + 1] != "0")
    width = cv2.imread(os.path.join(wider, "WIDER_val", "images", lines[k])).shape[1]
    lines[k + 2] = f"{width - 6} 1 50 5 0 0 0 0 0 0 "  # overhangs the right border by 44 px
    with open(vgt, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.raises(TinydetError, match=re.escape(f"{vgt}:{k + 3}: face ({width - 6},1,50,5) is outside")):
        load_records({"format": "wider", "root": wider}, "val")
    records, _, summary = load_records({"format": "wider", "root": wider, "skip_bad": True}, "val")
    assert summary.counts == {"box_outside_image": 1}
    # a 44 px overhang is accepted and clipped with clip_tolerance >= 44
    records, _, summary = load_records({"format": "wider", "root": wider, "clip_tolerance": 44}, "val")
    name = lines[k][:-4]
    rec = next(r for r in records if r.image_id == name)
    assert summary.total == 0 and rec.boxes[0].tolist() == [width - 6, 1, width, 6]


def test_many_bad_inputs_are_summarised_once(voc, capsys):
    ids = train_ids(voc)
    os.remove(os.path.join(voc, "VOC2007", "JPEGImages", f"{ids[0]}.jpg"))
    os.remove(os.path.join(voc, "VOC2007", "JPEGImages", f"{ids[1]}.jpg"))
    with open(os.path.join(voc, "VOC2007", "Annotations", f"{ids[2]}.xml"), "w") as fh:
        fh.write("<annotation>")
    records, _, summary = load_records(cfg(voc, skip=True), "train")
    assert summary.counts == {"missing_image": 2, "malformed_xml": 1} and summary.total == 3
    assert len(records) == len(ids) - 3
    err = capsys.readouterr().err
    assert err.count("skipped 3 bad input(s)") == 1
    assert "missing_image: 2" in err and "malformed_xml: 1" in err
    assert summary.to_dict()["total"] == 3


def test_cli_reports_bad_data_in_one_line(voc, capsys):
    from tinydet.cli import main

    ann, tree, _ = first_with_objects(voc)
    tree.getroot().find("object/name").text = "dragon"
    tree.write(ann)
    cfg_file = os.path.join(voc, "c.yaml")
    with open(cfg_file, "w") as fh:
        fh.write(f"data:\n  format: voc\n  root: {voc}\n  train: [[2007, train]]\n  classes: {CLASSES}\n")
    rc = main(["data", "anchors", "--data-config", cfg_file, "--k", "2", "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinydet: error: ") and "'dragon'" in lines[0]
