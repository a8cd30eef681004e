"""Evaluation as ``tinydet eval`` runs it: which data set and which model or detections file,
then the scorers of :mod:`tinydet.eval` (VOC devkit, pycocotools, WIDER Face).
"""
from __future__ import annotations

import copy
import os
import re
import sys
from typing import Any, Iterable, Sequence

from tinydet.errors import TinydetError

_VOC_DIR = re.compile(r"^VOC\d{4}$")


def _log(message: str) -> None:
    print(f"tinydet eval: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- data sets


def detect_data_format(path: str) -> str:
    """'voc', 'wider', 'coco' or 'yolo' from the layout (VOCdevkit root, VOC<year>/, WIDER root,
    a COCO .json or a folder with annotations/instances_*.json, a YOLO data YAML or data.yaml)."""
    if os.path.isfile(path) and path.endswith(".json"):
        return "coco"
    if (os.path.isfile(path) and path.endswith((".yaml", ".yml"))) or os.path.isfile(os.path.join(path, "data.yaml")):
        return "yolo"
    ann = os.path.join(path, "annotations")
    if os.path.isdir(ann) and any(f.startswith("instances_") and f.endswith(".json") for f in os.listdir(ann)):
        return "coco"
    if not os.path.isdir(path):
        raise TinydetError(f"{path}: --data folder does not exist")
    entries = set(os.listdir(path))
    is_wider = bool(entries & {"wider_face_split", "WIDER_val", "eval_tools", "ground_truth"}) or \
        any(name.endswith("_val.mat") for name in entries)
    is_voc = bool(_VOC_DIR.match(os.path.basename(os.path.normpath(path)))) or \
        any(_VOC_DIR.match(e) for e in entries) or "VOCdevkit" in entries
    if is_voc and is_wider:
        raise TinydetError(f"{path}: looks like both a VOC and a WIDER Face set; pass --format voc or --format wider")
    if not (is_voc or is_wider):
        raise TinydetError(f"{path}: expected a VOC devkit folder (VOC<year>/Annotations, ...) or a WIDER Face "
                           "root (wider_face_split/, WIDER_val/)")
    return "voc" if is_voc else "wider"


def voc_base(data: str, image_set: str) -> tuple[str, str]:
    """(devkit root, year) of the VOC<year> folder under ``data`` that has ``image_set``."""
    data = os.path.normpath(data)
    if _VOC_DIR.match(os.path.basename(data)):
        return os.path.dirname(data) or ".", os.path.basename(data)[3:]
    root = os.path.join(data, "VOCdevkit") if os.path.isdir(os.path.join(data, "VOCdevkit")) else data
    years = sorted(e[3:] for e in os.listdir(root) if _VOC_DIR.match(e) and
                   os.path.isfile(os.path.join(root, e, "ImageSets", "Main", f"{image_set}.txt")))
    if not years:
        raise TinydetError(f"{root}: no VOC<year>/ImageSets/Main/{image_set}.txt (check --split)")
    if len(years) > 1:
        raise TinydetError(f"{root}: image set '{image_set}' exists for years {years}; pass --data {root}/VOC<year>")
    return root, years[0]


def voc_classes(root: str, year: str, image_set: str) -> list[str]:
    """Class names from the devkit's per-class image set files ``<class>_<image_set>.txt``."""
    from tinydet.data.records import VOC_CLASSES

    main = os.path.join(root, f"VOC{year}", "ImageSets", "Main")
    suffix = f"_{image_set}.txt"
    names = sorted(f[: -len(suffix)] for f in os.listdir(main) if f.endswith(suffix) and len(f) > len(suffix))
    if not names:
        raise TinydetError(f"{main}: no per-class files <class>{suffix} to take the class names from; "
                           "pass --classes a,b,... (in label order) or -c CONFIG")
    return [c for c in VOC_CLASSES if c in names] if set(names) <= set(VOC_CLASSES) else names


def _load(data_cfg: dict, split: str, source: str) -> tuple[list, list[str]]:
    from tinydet.data.records import load_records

    records, classes, _ = load_records(data_cfg, split, source)
    return records, classes


# ------------------------------------------------------------------------------------ scoring


def score_voc(detections: Any, records: list, classes: list[str], per_class_lists: Any = None) -> dict:
    """VOC + COCO figures of ``detections``; ``per_class_lists`` keeps a comp4 file's line order."""
    from tinydet.eval.coco import eval_coco
    from tinydet.eval.voc import eval_voc, eval_voc_per_class

    if per_class_lists is not None:
        result = eval_voc_per_class(per_class_lists, records, classes)
    else:
        result = eval_voc(detections, records, classes)
    return {"map50": result["map50"], "map50_area": result["map50_area"], **eval_coco(detections, records, classes),
            "per_class": result["per_class"], "n_images": result["n_images"]}


def evaluate_detections(dets: str, *, data: str | None = None, config: str | None = None,
                        overrides: Iterable[str] = (), fmt: str | None = None, split: str | None = None,
                        class_names: str | None = None) -> dict:
    """Score a detections file or folder ``dets`` (VOC comp4 folder, COCO results .json, WIDER
    submission folder) against the data set ``data`` (its real layout, format ``fmt`` or detected)
    or the config's data: ``tinydet eval --dets``. ``split`` is one of the config's splits with a
    config, else the VOC image set / WIDER split; ``class_names`` are comma-separated VOC names in
    label order (without a config)."""
    from tinydet.eval import formats
    from tinydet.eval.wider import (detections_to_wider, eval_wider, find_wider_mats, load_wider_mat,
                                    wider_gt_from_records)

    if class_names and config:
        raise TinydetError("--classes applies without -c; with -c the config's data.classes are used")
    if data is None and config is None:
        raise TinydetError("--dets needs --data DIR (the data set the detections are scored against) or -c CONFIG")
    cfg_data = None
    default_split = None
    if config is not None:
        from tinydet.config import load_config, to_dict

        cfg = load_config(config, overrides)
        cfg_data, default_split = to_dict(cfg["data"]), cfg["eval"]["split"]
        if data is not None:
            cfg_data["root"] = data
    data = data if data is not None else cfg_data["root"]
    data_fmt = fmt or (cfg_data.get("format", "voc") if cfg_data else detect_data_format(data))
    dets_fmt = formats.detect_format(dets)
    if dets_fmt == "wider" and data_fmt != "wider":
        raise TinydetError(f"{dets}: a WIDER submission folder needs a WIDER Face data set, but {data} is {data_fmt}")
    result: dict = {"source": f"dets:{dets}", "dets_format": dets_fmt, "data": data, "format": data_fmt}

    if data_fmt == "coco" and os.path.isfile(data):  # a COCO ground-truth JSON alone
        from tinydet.data.coco import label_category_ids, load_coco_ground_truth

        classes_arg = [c.strip() for c in class_names.split(",") if c.strip()] if class_names else None
        records, classes = load_coco_ground_truth(data, classes_arg)
        if dets_fmt != "coco":
            raise TinydetError(f"{dets}: a COCO ground-truth JSON is scored with COCO results (.json)")
        _log(f"{len(records)} images, {len(classes)} classes; reading COCO results {dets}")
        detections = formats.read_coco_results(dets, [r.image_id for r in records], len(classes),
                                               label_category_ids(records, classes))
        coverage = formats.check_coverage(dets, [r.image_id for r in records], detections)
        result.update(split=os.path.basename(data), **score_voc(detections, records, classes), **coverage)
        return result
    if data_fmt in ("coco", "yolo"):
        from tinydet.data.coco import label_category_ids

        split = split or (default_split if cfg_data is not None else "val")
        data_cfg = cfg_data if cfg_data is not None else {"format": data_fmt, "root": data, "test": [split]}
        if class_names:
            data_cfg = dict(data_cfg, classes=[c.strip() for c in class_names.split(",") if c.strip()])
        records, classes = _load(data_cfg, split if cfg_data is not None else "test", config or data)
        result["split"] = split
        ids = [r.image_id for r in records]
        if dets_fmt == "voc":
            lists = formats.read_voc_dets(dets, classes, ids)
            detections = formats.class_detections_to_detections(lists)
            result.update(score_voc(detections, records, classes, lists))
        else:
            detections = formats.read_coco_results(dets, ids, len(classes), label_category_ids(records, classes))
            result.update(score_voc(detections, records, classes))
        result.update(formats.check_coverage(dets, ids, detections))
        return result
    if data_fmt == "voc":
        if cfg_data is not None:
            split = split or default_split
            if split not in ("train", "val", "test"):
                raise TinydetError(f"--split '{split}' with -c must be one of train, val, test")
            records, classes = _load(cfg_data, split, config)
        else:
            split = split or "test"
            root, year = voc_base(data, split)
            classes = [c.strip() for c in class_names.split(",") if c.strip()] if class_names \
                else voc_classes(root, year, split)
            records, classes = _load({"format": "voc", "root": root, "test": [[year, split]], "classes": classes},
                                     "test", data)
        result["split"] = split
        ids = [r.image_id for r in records]
        _log(f"{len(records)} images, {len(classes)} classes; reading {dets_fmt} detections {dets}")
        if dets_fmt == "voc":
            lists = formats.read_voc_dets(dets, classes, ids)
            detections = formats.class_detections_to_detections(lists)
            result.update(score_voc(detections, records, classes, lists))
        else:
            detections = formats.read_coco_results(dets, ids, len(classes))
            result.update(score_voc(detections, records, classes))
        result.update(formats.check_coverage(dets, ids, detections))
        return result

    if cfg_data is not None:  # --split names a config split, whose entries are WIDER splits
        from tinydet.data.records import resolve_data_cfg

        split = split or default_split
        data_cfg, source = resolve_data_cfg(cfg_data, config), config
        wider_splits, load_split = list(data_cfg.get(split) or []), split
    else:  # --split names the WIDER split itself
        split = split or "val"
        data_cfg, source, wider_splits = {"format": "wider", "root": data, "test": [split]}, data, [split]
        load_split = "test"
    result["split"] = split
    # the official .mat subsets describe WIDER's val split only
    official = wider_splits == ["val"] and find_wider_mats(data) is not None
    records = None
    if dets_fmt != "wider" or not official:
        records, _ = _load(data_cfg, load_split, source)
    if dets_fmt == "wider":
        pred = formats.read_wider_dets(dets)
        gt = load_wider_mat(data) if official else wider_gt_from_records(records)
        formats.check_coverage(dets, [(e, f) for i, e in enumerate(gt.events) for f in gt.files[i]],
                               [(e, f) for e, images in pred.items() for f in images])
        result.update(eval_wider(pred, gt=gt, records=records))
        return result
    ids = [r.image_id for r in records]
    if dets_fmt == "voc":
        detections = formats.class_detections_to_detections(formats.read_voc_dets(dets, ["face"], ids))
    else:
        detections = formats.read_coco_results(dets, ids, 1)
    formats.check_coverage(dets, ids, detections)
    result.update(eval_wider(detections_to_wider(detections, records), data if official else None, records=records))
    return result


#: How ``tinydet eval --export DIR --int8`` runs the int8 model: the numpy int8 reference (the
#: firmware's arithmetic, bit for bit; default), the QDQ models in onnxruntime, full.int8.tflite in
#: LiteRT's reference kernels (bit exact with the reference), or the firmware itself on QEMU.
ENGINES = ("reference", "onnxruntime", "litert", "qemu")
QEMU_TARGET = "qemu-mps2-an500"
#: images per QEMU process for ``--engine qemu`` (one firmware start, then image after image)
QEMU_BATCH = 32


class FirmwareRunner:
    """``--engine qemu``: the export folder's firmware (deploy/demo/main.c + the generated model),
    built once into a temporary folder for ``target`` in ``layer`` mode (full.int8.onnx) or
    ``patch`` mode (stage 1 tile by tile, then stage 2). Each call runs its images in one QEMU
    process and returns the firmware's raw int8 outputs dequantized (float NCHW, like the other
    engines), so the same Python decode + NMS makes the detections as for the reference; the
    firmware's own C decode is checked against that decode by ``tinydet deploy --validate``.

    :meth:`close` removes the folder, except after a failed build or run: the error names the log
    kept there."""

    def __init__(self, export: str, mode: str = "layer", target: str = QEMU_TARGET) -> None:
        import tempfile
        from pathlib import Path

        from tinydet.deploy.build import build_firmware

        self.mode, self.target = mode, target
        self.folder = Path(tempfile.mkdtemp(prefix="tinydet-eval-qemu-"))
        self._keep = False
        self.images_run = 0
        self._instructions: list[float] = []
        try:
            self.info = build_firmware(export, target, self.folder / "build", mode=mode)
        except TinydetError:
            self._keep = any(self.folder.iterdir())  # nothing written: the toolchain check refused
            self.close()
            raise
        _log(f"--engine qemu: built {self.info['elf']} ({mode} mode, {self.info['sram_arena_bytes']} B arena)")

    def __call__(self, images: Any) -> list:
        from tinydet.deploy.run import output_maps, quantize_images, run_firmware

        batch = quantize_images(images, self.info["input"])
        try:
            # generous: the demo detector runs ~160M instructions in under a second of QEMU
            res = run_firmware(self.info, batch, self.folder / "run", timeout_s=60.0 + 20.0 * len(batch))
        except TinydetError:
            self._keep = True
            raise
        self.images_run += len(batch)
        if res.instructions_per_tick > 0:
            self._instructions.extend(t * res.instructions_per_tick for t in res.ticks)
        return output_maps(res.outputs, self.info["outputs"])

    def figures(self) -> dict:
        """What ran: target, mode, images, mean instructions per inference (QEMU -icount)."""
        mean = round(sum(self._instructions) / len(self._instructions)) if self._instructions else None
        return {"target": self.target, "mode": self.mode, "images": self.images_run,
                "instructions_per_inference": mean,
                "decode": "firmware's raw int8 outputs, decoded by tinydet.models.decode (as every engine)"
                if not self.info.get("classifier") else "firmware's int8 logits, dequantized and ranked in Python "
                                                        "(as every engine)"}

    def close(self) -> None:
        import shutil

        if not self._keep:
            shutil.rmtree(self.folder, ignore_errors=True)


def int8_runner(export: str, engine: str = "reference", patched: bool = False) -> Any:
    """``callable(images) -> float NCHW outputs`` of the export folder's int8 model on ``engine``
    (``qemu``: a :class:`FirmwareRunner`, to be closed)."""
    if engine not in ENGINES:
        raise TinydetError(f"--engine '{engine}': expected one of {', '.join(ENGINES)}")
    if engine == "onnxruntime":
        from tinydet.export.runtime import onnx_runner

        return onnx_runner(export, int8=True, patched=patched)
    if engine == "litert":
        from tinydet.export.tflite import litert_runner

        if patched:
            raise TinydetError("--engine litert runs full.int8.tflite, the full model; drop --patched")
        return litert_runner(export)
    if engine == "qemu":
        return FirmwareRunner(export, "patch" if patched else "layer")
    from tinydet.export import load_export
    from tinydet.quant.reference import Int8Reference

    ref = Int8Reference(export, load_export(export).schedule)
    return ref.run_stitched if patched else ref.run_full


def model_runner(cfg: Any, *, ckpt: str | None = None, onnx: str | None = None, export: str | None = None,
                 int8: bool = False, patched: bool = False, engine: str = "reference") -> tuple[Any, str]:
    """(runner images -> raw head maps, its description) of the one model given: a checkpoint
    (PyTorch), an ONNX file, or an export folder (float or ``int8`` on ``engine``, full or ``patched``)."""
    if ckpt:
        from tinydet.pipeline.predict import torch_runner

        return torch_runner(cfg, ckpt), f"checkpoint:{ckpt}"
    from tinydet.export.runtime import onnx_runner

    if onnx:
        return onnx_runner(onnx), f"onnx:{onnx}"
    mode = "int8" if int8 else "float"
    runner = int8_runner(export, engine, patched) if int8 else onnx_runner(export, patched=patched)
    return runner, f"export:{export} ({mode}, {'patched' if patched else 'full'})"


def save_detections(path: str, fmt: str, detections: Any, records: list, classes: list[str], split: str) -> None:
    """Write ``detections`` as COCO results (``path`` ends in .json), a WIDER submission folder
    (``fmt`` wider) or VOC comp4 files."""
    from tinydet.eval import formats
    from tinydet.eval.wider import detections_to_wider

    if path.endswith(".json"):
        from tinydet.data.coco import label_category_ids

        formats.write_coco_results(path, detections, label_category_ids(records, classes))
    elif fmt == "wider":
        formats.write_wider_dets(path, detections_to_wider(detections, records))
    else:
        formats.write_voc_dets(path, detections, classes, image_set=split)
    _log(f"detections written to {path}")


def model_class_names(runner: Any, export: str | None) -> list[str] | None:
    """The class names the model was trained with: the checkpoint's, or the export folder's
    ``schedule.json: detector.class_names``; None when unknown (a bare ONNX file, an export
    without detector metadata or with placeholder names)."""
    names = getattr(getattr(runner, "model", None), "class_names", None)
    if names is None and export is not None:
        from tinydet.export.schedule_file import load_export

        detector = load_export(export, verify=False).schedule.get("detector") or {}
        names = detector.get("class_names")
    if not names or all(n == f"class{i}" for i, n in enumerate(names)):
        return None
    return list(names)


def reconcile_classes(model_names: Sequence[str], config_names: Sequence[str], model_what: str,
                      config_what: str) -> list[str]:
    """The class order to score in: the model's (its labels index its own names). A config listing
    the same names in another order is remapped by name, with a note on stderr; a config with other
    names is a one-line error listing both."""
    model_names, config_names = list(model_names), list(config_names)
    if model_names == config_names:
        return model_names
    if set(model_names) != set(config_names) or len(model_names) != len(config_names):
        raise TinydetError(f"{config_what}: data.classes {config_names} are not the classes {model_names} of "
                           f"{model_what}; evaluate with the data set the model was trained on")
    print(f"tinydet: note: {config_what}: data.classes lists the classes of {model_what} in another order; "
          f"scoring by name in the model's order {model_names}", file=sys.stderr)
    return model_names


def evaluate_model(cfg: Any, *, ckpt: str | None = None, onnx: str | None = None, export: str | None = None,
                   int8: bool = False, patched: bool = False, split: str | None = None,
                   save_dets: str | None = None, engine: str = "reference") -> dict:
    """mAP of one model (see :func:`model_runner`) on the config's ``split`` (default eval.split):
    VOC + COCO figures, or WIDER Face easy / medium / hard: ``tinydet eval -c``. ``save_dets`` also
    writes the detections (:func:`save_detections`)."""
    from tinydet.data.records import resolve_data_cfg
    from tinydet.eval.wider import eval_wider_detections
    from tinydet.config import to_dict
    from tinydet.pipeline.predict import predict

    split = split or cfg["eval"]["split"]
    if split not in ("train", "val", "test"):
        raise TinydetError(f"--split '{split}' must be one of train, val, test")
    data_cfg = resolve_data_cfg(to_dict(cfg["data"]), getattr(cfg, "source", None))
    runner, source = model_runner(cfg, ckpt=ckpt, onnx=onnx, export=export, int8=int8, patched=patched,
                                  engine=engine)
    names = model_class_names(runner, export)
    if names is not None:  # the model's classes are the truth: ground-truth labels follow its order
        order = reconcile_classes(names, data_cfg["classes"], f"checkpoint {ckpt}" if ckpt else f"export {export}",
                                  str(getattr(cfg, "source", "config")))
        if order != list(data_cfg["classes"]):
            cfg = copy.deepcopy(cfg)
            cfg["data"]["classes"] = order
            data_cfg = dict(data_cfg, classes=order)
    firmware = runner if isinstance(runner, FirmwareRunner) else None
    _log(f"predicting {data_cfg['format']} split '{split}' with {source}" +
         (f" on {firmware.target} ({firmware.mode}-mode firmware)" if firmware else ""))
    try:
        detections, records = predict(cfg, runner, split, batch_size=QEMU_BATCH if firmware else 8)
    finally:
        if firmware:
            firmware.close()
    result: dict = {"source": source, "data": data_cfg["root"], "format": data_cfg["format"], "split": split}
    if int8:
        result["engine"] = engine
    if firmware:
        result["device"] = firmware.figures()
    if save_dets:
        save_detections(save_dets, data_cfg["format"], detections, records, data_cfg["classes"], split)
    if data_cfg["format"] == "wider":
        # the official .mat subsets describe WIDER's val split only
        gt_dir = data_cfg["root"] if list(data_cfg[split]) == ["val"] else None
        result.update(eval_wider_detections(detections, records, gt_dir))
    else:
        result.update(score_voc(detections, records, data_cfg["classes"]))
    return result
