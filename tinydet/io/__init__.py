"""Input/output shared by every package: atomic writes (:mod:`tinydet.io.atomic`), onnxruntime
sessions (:mod:`tinydet.io.onnxrt`) and checkpoint reading (:mod:`tinydet.io.checkpoint`)."""
