"""tinydet.io.onnxrt: one session builder, intermediate tensors exposed, clear errors."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tinydet.errors import TinydetError
from tinydet.io.onnxrt import expose_outputs, session


def _model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("Relu", ["x"], ["mid"]), helper.make_node("Neg", ["mid"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_exposed_intermediate_tensor_and_the_original_untouched(tmp_path):
    model = _model()
    feeds = {"x": np.array([[-1.0, 0.5, 2.0]], np.float32)}
    sess = session(model, expose=["mid", "y"])
    mid, y = sess.run(["mid", "y"], feeds)
    np.testing.assert_array_equal(mid, [[0.0, 0.5, 2.0]])
    np.testing.assert_array_equal(y, [[0.0, -0.5, -2.0]])
    assert [o.name for o in model.graph.output] == ["y"]  # a copy was exposed
    assert [o.name for o in expose_outputs(model, ["mid", "mid"]).graph.output] == ["y", "mid"]
    onnx.save(model, tmp_path / "m.onnx")  # from a path, with and without exposing
    assert [o.name for o in session(tmp_path / "m.onnx").get_outputs()] == ["y"]
    assert [o.name for o in session(tmp_path / "m.onnx", expose=["mid"]).get_outputs()] == ["y", "mid"]


def test_unloadable_model_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(TinydetError, match=r"bad\.onnx: onnxruntime cannot load the model") as err:
        session(bad)
    assert "\n" not in str(err.value)
