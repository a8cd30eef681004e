"""COCO and YOLO data sets: loaders, bad inputs, converters (VOC -> COCO -> YOLO -> VOC), eval on COCO GT."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tinydet.data.convert import convert
from tinydet.data.records import load_records
from tinydet.data.synth import synth_coco_yolo, synth_voc
from tinydet.errors import TinydetError
from tinydet.eval.voc import eval_voc

CLASSES = ["circle", "square", "triangle"]


def records_of(fmt, root, split="test", **extra):
    cfg = {"format": fmt, "root": str(root), "train": [split], "val": [split], "test": [split], **extra}
    if fmt == "voc":
        cfg.update(train=[[2007, split]], val=[[2007, split]], test=[[2007, split]])
    records, classes, summary = load_records(cfg, "test", "cfg.yaml")
    return records, classes, summary


def voc_pixels(record):
    """The devkit's integer xmin ymin xmax ymax of a record's boxes (x1 + 1, x2)."""
    b = record.boxes.astype(np.float64)
    return np.column_stack([b[:, 0] + 1, b[:, 1] + 1, b[:, 2], b[:, 3]]).tolist()


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    synth_voc(str(root), 14, seed=3, size=96, classes=CLASSES)
    return root


def test_voc_coco_yolo_voc_round_trip_keeps_every_box(voc_root, tmp_path):
    convert("voc", str(voc_root), "coco", str(tmp_path / "coco"))
    convert("coco", str(tmp_path / "coco"), "yolo", str(tmp_path / "yolo"))
    back = convert("yolo", str(tmp_path / "yolo"), "voc", str(tmp_path / "voc2"))
    assert back["splits"] == {"train": 8, "val": 3, "test": 3}
    for split in ("train", "val", "test"):
        orig, classes, _ = records_of("voc", voc_root, split, classes=CLASSES)
        coco, _, _ = records_of("coco", tmp_path / "coco", split)
        yolo, _, _ = records_of("yolo", tmp_path / "yolo", split)
        again, _, _ = records_of("voc", tmp_path / "voc2", split, classes=CLASSES)
        by_name = {os.path.basename(r.path): r for r in orig}
        assert len(orig) == len(coco) == len(yolo) == len(again)
        for chain in (coco, yolo, again):
            for r in chain:
                o = by_name[os.path.basename(r.path)]
                assert voc_pixels(r) == voc_pixels(o)  # exact: the same integer devkit pixels
                assert r.labels.tolist() == o.labels.tolist() and (r.width, r.height) == (o.width, o.height)
        for r in coco:  # COCO keeps difficult as iscrowd; YOLO has no such flag
            assert r.difficult.tolist() == by_name[os.path.basename(r.path)].difficult.tolist()
    assert sum(int(r.difficult.sum()) for s in ("train", "val", "test")
               for r in records_of("voc", voc_root, s, classes=CLASSES)[0]) > 0
    xml = (tmp_path / "voc2" / "VOC2007" / "Annotations").iterdir().__next__().read_text()
    assert "<xmin>" in xml and "." not in xml.split("<xmin>")[1].split("</xmin>")[0]  # integer pixels


def test_coco_bbox_is_continuous_and_categories_map_by_name(tmp_path):
    synth_coco_yolo("coco", str(tmp_path / "c"), 6, seed=1, size=96, classes=CLASSES)
    ann = json.loads((tmp_path / "c" / "annotations" / "instances_train.json").read_text())
    a = ann["annotations"][0]
    rec, classes, _ = records_of("coco", tmp_path / "c", "train")
    assert classes == [c["name"] for c in sorted(ann["categories"], key=lambda c: c["id"])]
    r = next(r for r in rec if r.extra["coco_id"] == a["image_id"])
    x, y, w, h = a["bbox"]
    assert r.boxes[0].tolist() == pytest.approx([x, y, x + w, y + h])
    assert r.image_id == str(a["image_id"])
    reordered = list(reversed(classes))
    rec2, classes2, _ = records_of("coco", tmp_path / "c", "train", classes=reordered)
    r2 = next(r for r in rec2 if r.image_id == rec[0].image_id)
    assert [classes2[i] for i in r2.labels] == [classes[i] for i in rec[0].labels]


def test_crowd_boxes_are_ignored_like_voc_difficult(tmp_path):
    img_dir = tmp_path / "images" / "val"
    img_dir.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (100, 80)).save(img_dir / "a.jpg")
    gt = {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
          "categories": [{"id": 3, "name": "cat"}],
          "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 20], "iscrowd": 0},
                          {"id": 2, "image_id": 7, "category_id": 3, "bbox": [50, 40, 30, 30], "iscrowd": 1}]}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(gt))
    records, classes, _ = records_of("coco", tmp_path, "val")
    assert classes == ["cat"] and records[0].difficult.tolist() == [False, True]
    # a detection on the crowd box is no false positive, and the undetected crowd box is no miss
    dets = {"7": (np.array([[50, 40, 80, 70], [10, 10, 30, 30]], float), np.array([0.9, 0.8]), np.array([0, 0]))}
    assert eval_voc(dets, records, classes)["map50"] == pytest.approx(1.0)
    only = {"7": (np.array([[10, 10, 30, 30]], float), np.array([0.8]), np.array([0]))}
    assert eval_voc(only, records, classes)["map50"] == pytest.approx(1.0)


def write_coco(tmp_path, annotations, images=None, categories=None):
    from PIL import Image

    (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "val" / "a.jpg")
    gt = {"images": images or [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
          "categories": categories or [{"id": 1, "name": "circle"}], "annotations": annotations}
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / "instances_val.json"
    path.write_text(json.dumps(gt))
    return path


@pytest.mark.parametrize("ann, message", [
    ({"id": 5, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}, r"annotation id 5: category_id 9 is not in"),
    ({"id": 6, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}, r"annotation id 6: image_id 2 is not in images"),
    ({"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]}, r"annotation id 7: bbox must be \[x, y, w, h\]"),
    ({"id": 8, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]},
     r"annotation id 8: bbox .* width or height <= 0"),
    ({"id": 9, "image_id": 1, "category_id": 1, "bbox": [60, 1, 10, 5]}, r"annotation id 9: bbox .* outside the 64x48"),
])
def test_coco_bad_annotations_name_the_annotation_id(tmp_path, ann, message):
    path = write_coco(tmp_path, [ann])
    with pytest.raises(TinydetError, match=message) as exc:
        records_of("coco", tmp_path, "val")
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    records, _, summary = records_of("coco", tmp_path, "val", skip_bad=True)
    assert summary.total == 1 and len(records) == 1 and len(records[0].labels) == 0


def test_coco_bad_files(tmp_path):
    path = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "a.jpg", "width": 60, "height": 48}])
    with pytest.raises(TinydetError, match=r"image id 1: width x height says 60x48 but .*a.jpg is 64x48"):
        records_of("coco", tmp_path, "val")
    write_coco(tmp_path, [], images=[{"id": 1, "file_name": "b.jpg", "width": 64, "height": 48}])
    with pytest.raises(TinydetError, match=r"image id 1: file_name names .*b.jpg, which does not exist"):
        records_of("coco", tmp_path, "val")
    path.write_text('{"images": [}')
    with pytest.raises(TinydetError, match=r"instances_val.json:1: not valid JSON"):
        records_of("coco", tmp_path, "val")
    with pytest.raises(TinydetError, match=r"instances_nope.json: COCO annotation file does not exist"):
        records_of("coco", tmp_path, "nope")


def write_yolo(tmp_path, label_text, names=("circle", "square")):
    from PIL import Image

    (tmp_path / "images" / "val").mkdir(parents=True, exist_ok=True)
    (tmp_path / "labels" / "val").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (100, 50)).save(tmp_path / "images" / "val" / "a.jpg")
    Image.new("RGB", (100, 50)).save(tmp_path / "images" / "val" / "b.jpg")  # no label file: background
    (tmp_path / "labels" / "val" / "a.txt").write_text(label_text)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": ".", "val": "images/val", "names": list(names)}))


def test_yolo_loader_normalised_boxes_and_background_images(tmp_path):
    write_yolo(tmp_path, "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.2 0.4\n")
    records, classes, _ = records_of("yolo", tmp_path, "val")
    assert classes == ["circle", "square"] and [r.image_id for r in records] == ["images/val/a", "images/val/b"]
    np.testing.assert_allclose(records[0].boxes, [[40, 15, 60, 35], [0, 0, 20, 20]], atol=1e-5)
    assert records[0].labels.tolist() == [1, 0] and len(records[1].labels) == 0
    records, _, _ = records_of("yolo", tmp_path / "data.yaml", "val", classes=["square", "circle"])
    assert records[0].labels.tolist() == [0, 1]  # mapped by name


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", r"a.txt:1: expected 'class cx cy w h' \(5 fields\), got 4"),
    ("x 0.5 0.5 0.2 0.2", r"a.txt:1: expected an integer class and 4 numbers"),
    ("2 0.5 0.5 0.2 0.2", r"a.txt:1: class 2 is not an index of names \(0..1\)"),
    ("0 0.95 0.5 0.2 0.2", r"a.txt:1: box .* is outside the image"),
    ("0 0.5 0.5 0 0.2", r"a.txt:1: width and height must be > 0"),
])
def test_yolo_bad_label_lines_name_file_and_line(tmp_path, line, message):
    write_yolo(tmp_path, line + "\n")
    with pytest.raises(TinydetError, match=message):
        records_of("yolo", tmp_path, "val")
    records, _, summary = records_of("yolo", tmp_path, "val", skip_bad=True)
    assert summary.total == 1 and len(records) == 2


def test_yolo_bad_yaml(tmp_path):
    write_yolo(tmp_path, "")
    (tmp_path / "data.yaml").write_text("path: .\nval: images/val\n")
    with pytest.raises(TinydetError, match=r"data.yaml: field names must be a non-empty list"):
        records_of("yolo", tmp_path, "val")
    (tmp_path / "data.yaml").write_text("path: .\nval: images/val\nnames: [a]\n")
    with pytest.raises(TinydetError, match=r"data.yaml: data.test entry 'train' is not a split of the data YAML"):
        records_of("yolo", tmp_path, "train")


def test_convert_is_atomic_and_refuses_to_overwrite(voc_root, tmp_path):
    out = tmp_path / "coco"
    convert("voc", str(voc_root), "coco", str(out))
    with pytest.raises(TinydetError, match="already exists"):
        convert("voc", str(voc_root), "coco", str(out))
    bad = tmp_path / "badyolo"
    write_yolo(bad, "0 0.5 0.5 0.2\n")
    with pytest.raises(TinydetError, match=r"a.txt:1: expected 'class cx cy w h'"):
        convert("yolo", str(bad), "coco", str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".convert-")]
    summary = convert("yolo", str(bad), "coco", str(tmp_path / "skipped"), skip_bad=True)
    assert summary["boxes"] == 0 and summary["images"] == 2


def test_synth_yolo_trains_through_the_datamodule(tmp_path):
    from tinydet.data.datamodule import DetectionDataModule

    synth_coco_yolo("yolo", str(tmp_path / "y"), 6, seed=0, size=96, classes=CLASSES)
    dm = DetectionDataModule({"format": "yolo", "root": str(tmp_path / "y")}, (64, 64), 2, 0, 0, False, "cfg")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[1:] == (3, 64, 64) and dm.class_names == CLASSES


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "tinydet", *args], capture_output=True, text=True, env=env)


def test_eval_scores_results_against_a_coco_ground_truth_json(tmp_path):
    synth_coco_yolo("coco", str(tmp_path / "c"), 8, seed=2, size=96, classes=CLASSES)
    gt_path = tmp_path / "c" / "annotations" / "instances_val.json"
    gt = json.loads(gt_path.read_text())
    # perfect results with the file's own (integer) image and category ids
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"] if not a["iscrowd"]]
    (tmp_path / "r.json").write_text(json.dumps(results))
    proc = run_cli("eval", "--dets", str(tmp_path / "r.json"), "--data", str(gt_path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == "coco" and out["map50"] == pytest.approx(1.0) and out["map_coco"] == pytest.approx(1.0)
    assert out["n_images"] == len(gt["images"])
    # the same through the set's folder (loader with images)
    proc = run_cli("eval", "--dets", str(tmp_path / "r.json"), "--data", str(tmp_path / "c"), "--split", "val",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["map50"] == pytest.approx(1.0)
    results[0]["category_id"] = 99
    (tmp_path / "r.json").write_text(json.dumps(results))
    proc = run_cli("eval", "--dets", str(tmp_path / "r.json"), "--data", str(gt_path))
    assert proc.returncode == 2 and "entry 0: category_id 99 must be an integer in one of" in proc.stderr


def test_data_convert_and_synth_cli(tmp_path):
    proc = run_cli("data", "synth", "--format", "yolo", "--out", str(tmp_path / "y"), "--images", "5",
                   "--size", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "yolo" and (tmp_path / "y" / "data.yaml").is_file()
    proc = run_cli("data", "convert", "--from", "yolo", "--src", str(tmp_path / "y"), "--to", "voc",
                   "--out", str(tmp_path / "v"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["images"] == 5 and (tmp_path / "v" / "VOC2007" / "ImageSets" / "Main" / "train.txt").is_file()
    proc = run_cli("data", "convert", "--from", "coco", "--src", str(tmp_path / "nothing"), "--to", "yolo",
                   "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "source data set does not exist" in proc.stderr
