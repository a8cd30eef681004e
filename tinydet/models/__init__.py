"""Detector model (backbone + YOLO-style head from an arch spec), loss, decode and NMS.

    model = Detector(get_spec("mbv2-w0.35"), num_classes=20, anchors=cfg.model.anchors)
    maps = model(images)                                   # raw head maps (docs/CONTRACTS.md)
    dets = postprocess(maps, model.anchors, model.strides.tolist(), images.shape[-2:])

``decode``/``postprocess`` also take numpy arrays (export validation, deploy checks); IoU and NMS
are :mod:`tinydet.ops.boxes`.
Checkpoints are loaded with :func:`tinydet.io.checkpoint.load_detector`.
"""
from tinydet.models.decode import decode, postprocess

__all__ = ["Detector", "YoloLoss", "decode", "postprocess", "head_strides",
           "detector_from_config"]


def __getattr__(name):
    # torch-dependent parts load lazily so numpy-only users (deploy checks) can import decode
    if name in ("Detector", "head_strides", "detector_from_config"):
        from tinydet.models import detector

        return getattr(detector, name)
    if name == "YoloLoss":
        from tinydet.models.loss import YoloLoss

        return YoloLoss
    raise AttributeError(name)
