"""onnxruntime sessions: the one place that builds an ``InferenceSession``.

Every session runs on the CPU provider with a fixed intra-op thread count (results do not depend
on it, timings do), logs errors only, and turns an unloadable model into a one-line
:class:`TinydetError`. ``expose`` adds intermediate tensors as graph outputs (calibration reads
every activation, the per-layer int8 check reads every ``T/q``) on a copy of the model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tinydet.errors import TinydetError


def expose_outputs(model, names: Sequence[str]):
    """A copy of ``model`` (``onnx.ModelProto``) whose graph outputs also list ``names``."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            have.add(name)
    return out


def session(model, threads: int | None = 1, expose: Sequence[str] = (), where: str | None = None):
    """An onnxruntime CPU session of ``model`` (a path, or an ``onnx.ModelProto``).

    ``threads`` = intra-op threads (None = onnxruntime's default); ``expose`` = intermediate tensor
    names to add as outputs (the model must then be a ModelProto or a path it can be loaded from).
    """
    import onnx
    import onnxruntime as ort

    where = where or (str(model) if isinstance(model, (str, Path)) else "<model>")
    if expose:
        if isinstance(model, (str, Path)):
            model = onnx.load(str(model))
        model = expose_outputs(model, expose)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise TinydetError(f"{where}: onnxruntime cannot load the model ({str(exc).splitlines()[0]})") from None
