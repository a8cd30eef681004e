"""Classification data: ImageFolder layout, the VWW builder (official 0.5% rule) on generated COCO
sets, the synthetic ImageFolder / person sets, and the classification DataModule."""
import json
import os

import cv2
import numpy as np
import pytest
import yaml

from tinydet.config import load_config
from tinydet.data.imagefolder import load_class_records, resolve_classify_data_cfg
from tinydet.data.vww import build_vww, vww_label
from tinydet.errors import TinydetError


def _jpeg(path, w=40, h=30):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def test_vww_rule_is_strict_and_uses_the_annotation_area():
    img_w, img_h = 200, 100  # 0.5% of 20000 = 100 px
    person, car = 1, 3
    ann = lambda cat, area, box=(0, 0, 50, 50): {"category_id": cat, "area": area, "bbox": list(box)}
    assert vww_label([ann(person, 100.0)], img_w, img_h, person)[0] == 0          # exactly 0.5%: not >
    assert vww_label([ann(person, 100.5)], img_w, img_h, person)[0] == 1
    # the box is 2500 px (12.5%) but the segmentation area is 60 px: the script reads 'area'
    assert vww_label([ann(person, 60.0)], img_w, img_h, person)[0] == 0
    assert vww_label([ann(car, 5000.0)], img_w, img_h, person)[0] == 0            # not the foreground
    label, kept = vww_label([ann(person, 10.0), ann(person, 300.0), ann(car, 900.0)], img_w, img_h, person)
    assert label == 1 and [k["area"] for k in kept] == [300.0]
    assert vww_label([], img_w, img_h, person)[0] == 0


def _coco(root, split, images, annotations, person_id=1):
    os.makedirs(root / "annotations", exist_ok=True)
    cats = [{"id": person_id, "name": "person"}, {"id": 7, "name": "train"}]
    doc = {"images": images, "annotations": annotations, "categories": cats}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    for im in images:
        _jpeg(root / split / im["file_name"], im["width"], im["height"])


def test_build_vww_on_a_generated_coco_set(tmp_path):
    coco = tmp_path / "coco"
    im = lambda i: {"id": i, "file_name": f"COCO_{i:012d}.jpg", "width": 100, "height": 100}
    a = lambda i, img, cat, area, crowd=0: {"id": i, "image_id": img, "category_id": cat, "area": area,
                                             "bbox": [0, 0, 30, 30], "iscrowd": crowd}
    # 0.5% of 10000 px = 50 px; person category id 5 (found by name, as the official script)
    _coco(coco, "train2014", [im(1), im(2), im(3), im(4)],
          [a(1, 1, 5, 51), a(2, 2, 5, 49), a(3, 2, 7, 4000), a(4, 4, 5, 50), a(5, 4, 5, 900, crowd=1)], person_id=5)
    _coco(coco, "val2014", [im(10), im(11), im(12)], [a(6, 10, 5, 2000), a(7, 11, 5, 10)], person_id=5)
    out = tmp_path / "vww"
    summary = build_vww(str(coco), str(out))
    assert summary["splits"] == {"train": {"images": 4, "person": 2, "background": 2},
                                 "val": {"images": 3, "person": 1, "background": 2}}
    assert (out / "labels.txt").read_text() == "0:background\n1:person\n"
    lines = (out / "train.txt").read_text().splitlines()
    assert [ln.rsplit(" ", 1)[1] for ln in lines] == ["1", "0", "0", "1"]   # image 4: the crowd box counts
    official = json.loads((out / "instances_visualwakewords_train.json").read_text())
    assert official["annotations"]["4"]["label"] == 1 and len(official["annotations"]["4"]["objects"]) == 1
    cfg = resolve_classify_data_cfg({"format": "vww", "root": str(out)})
    assert cfg["classes"] == ["background", "person"]
    records, classes, _ = load_class_records(cfg, "val")
    assert [r.label for r in records] == [1, 0, 0] and all(os.path.isfile(r.path) for r in records)
    with pytest.raises(TinydetError, match="already exists"):
        build_vww(str(coco), str(out))
    # the challenge's minival split: train = train2014 + val2014 minus the ids, val = the ids
    ids = tmp_path / "minival.txt"
    ids.write_text("10\n12\n")
    summary = build_vww(str(coco), str(tmp_path / "mini"), minival_ids=str(ids))
    assert summary["splits"]["train"]["images"] == 5 and summary["splits"]["val"] == \
        {"images": 2, "person": 1, "background": 1}


def test_build_vww_errors_are_one_line(tmp_path):
    with pytest.raises(TinydetError, match=r"instances_train2014\.json: COCO annotation file does not exist"):
        build_vww(str(tmp_path), str(tmp_path / "out"))
    coco = tmp_path / "c"
    _coco(coco, "train2014", [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}], [], person_id=1)
    doc = json.loads((coco / "annotations" / "instances_train2014.json").read_text())
    doc["categories"] = [{"id": 1, "name": "dog"}]
    (coco / "annotations" / "instances_train2014.json").write_text(json.dumps(doc))
    with pytest.raises(TinydetError, match="no category named 'person'"):
        build_vww(str(coco), str(tmp_path / "out"), splits=["train2014"])
    assert not (tmp_path / "out").exists()


def test_imagefolder_layout_classes_and_errors(tmp_path):
    root = tmp_path / "set"
    for split, names in {"train": ["dog", "cat", "ant"], "val": ["cat", "dog"]}.items():
        for name in names:
            for k in range(2):
                _jpeg(root / split / name / f"{k}.JPG")
    (root / "train" / "cat" / "notes.txt").write_text("x")
    (root / "train" / ".hidden").mkdir()
    cfg = resolve_classify_data_cfg({"format": "imagefolder", "root": str(root)})
    assert cfg["classes"] == ["ant", "cat", "dog"] and cfg["test"] == ["val"]       # sorted, as torchvision
    records, _, _ = load_class_records(cfg, "train")
    assert [r.label for r in records] == [0, 0, 1, 1, 2, 2]
    assert all(r.path.endswith(".JPG") for r in records)
    val, _, _ = load_class_records(cfg, "val")
    assert [r.label for r in val] == [1, 1, 2, 2]
    with pytest.raises(TinydetError, match=r"data\.classes does not match"):
        resolve_classify_data_cfg({"format": "imagefolder", "root": str(root), "classes": ["cat", "dog"]})
    with pytest.raises(TinydetError, match=r"data\.min_size does not apply to task classify"):
        resolve_classify_data_cfg({"format": "imagefolder", "root": str(root), "min_size": 4})
    with pytest.raises(TinydetError, match=r"data\.format is 'voc', expected one of imagefolder, vww"):
        resolve_classify_data_cfg({"format": "voc", "root": str(root)})
    _jpeg(root / "val" / "eel" / "0.jpg")
    with pytest.raises(TinydetError, match="class folder 'eel' is not a training class"):
        load_class_records(cfg, "val")
    os.makedirs(root / "train" / "bee")
    cfg = resolve_classify_data_cfg({"format": "imagefolder", "root": str(root), "skip_bad": False})
    with pytest.raises(TinydetError, match=r"train/bee: no image files"):
        load_class_records(cfg, "train")


def test_task_classify_config_resolves_its_data_section(tmp_path):
    from tinydet.data.synth import synth_imagefolder

    synth_imagefolder(str(tmp_path / "shapes"), 12, seed=1, size=32, classes=["circle", "square", "person"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"task": "classify", "data": {"format": "imagefolder",
                                                                 "root": str(tmp_path / "shapes")}}))
    assert load_config(path).task == "classify"
    with pytest.raises(TinydetError, match=r"^--set data\.format=imagefolders: data\.format is 'imagefolders'"):
        load_config(path, ["data.format=imagefolders"])


def test_synth_imagefolder_and_classification_batches(tmp_path):
    from tinydet.data.datamodule import ClassificationDataModule
    from tinydet.data.synth import synth_imagefolder

    out = tmp_path / "shapes"
    summary = synth_imagefolder(str(out), 16, seed=0, size=48, classes=["circle", "square"])
    assert summary["splits"]["val"] == {"circle": 2, "square": 2}
    assert sorted(os.listdir(out / "train")) == ["circle", "square"]
    again = tmp_path / "again"
    synth_imagefolder(str(again), 16, seed=0, size=48, classes=["circle", "square"])
    a = cv2.imread(str(out / "val" / "circle" / "circle_000014.jpg"))
    assert a.shape == (48, 48, 3) and np.array_equal(a, cv2.imread(str(again / "val" / "circle" / "circle_000014.jpg")))
    dm = ClassificationDataModule({"format": "imagefolder", "root": str(out)}, 32, batch_size=4, seed=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 32, 32) and batch["labels"].dtype.is_floating_point is False
    val = next(iter(dm.val_dataloader()))
    assert val["labels"].tolist() == [0, 0, 1, 1] and float(val["images"].max()) <= 1.0
    # evaluation is deterministic (the centre crop), training is augmented
    assert np.array_equal(dm.dataset("val")[0]["image"].numpy(), dm.dataset("val")[0]["image"].numpy())
    with pytest.raises(TinydetError, match=r"unknown key data\.augment\.translate"):
        ClassificationDataModule({"format": "imagefolder", "root": str(out), "augment": {"translate": 0.1}}, 32)


def test_synthetic_coco_persons_fall_on_both_sides_of_the_rule(tmp_path):
    from tinydet.data.synth import synth_coco_yolo

    coco = tmp_path / "coco"
    synth_coco_yolo("coco", str(coco), 40, seed=0, size=160, classes=["person", "circle", "square"])
    doc = json.loads((coco / "annotations" / "instances_train.json").read_text())
    person = next(c["id"] for c in doc["categories"] if c["name"] == "person")
    sizes = {im["id"]: im["width"] * im["height"] for im in doc["images"]}
    fractions = [a["area"] / sizes[a["image_id"]] for a in doc["annotations"] if a["category_id"] == person]
    assert min(fractions) < 0.005 < max(fractions)
    summary = build_vww(str(coco), str(tmp_path / "vww"), splits=["train", "val"])
    train = summary["splits"]["train"]
    assert train["person"] > 0 and train["background"] > 0


def test_calibration_images_of_a_classifier_config_are_its_centre_crops(tmp_path):
    from tinydet.config import from_dict
    from tinydet.data.datamodule import read_rgb
    from tinydet.data.imagefolder import load_class_records, resolve_classify_data_cfg
    from tinydet.data.synth import synth_imagefolder
    from tinydet.data.transforms import classify_input
    from tinydet.pipeline.images import split_images

    synth_imagefolder(str(tmp_path / "s"), 12, seed=0, size=40, classes=["circle", "cross"])
    cfg = from_dict({"task": "classify", "data": {"format": "imagefolder", "root": str(tmp_path / "s")}})
    images = split_images(cfg, 3, (32, 32), split="val")
    records, _, _ = load_class_records(resolve_classify_data_cfg(cfg["data"]), "val")
    assert len(images) == 3 and images[0].shape == (3, 32, 32)
    assert np.array_equal(images[0], classify_input(read_rgb(records[0].path), (32, 32)))
