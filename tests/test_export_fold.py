"""BN folding, the numpy reference and full.onnx against the torch model; unexportable layers."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from tinydet.arch.graph import Op
from tinydet.errors import TinydetError
from tinydet.export.fold import check_exportable, fold_network, run_folded
from tinydet.export.onnx_writer import full_model

from test_export_utils import random_network, tiny_spec, HEAD


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("head", [HEAD, None])
def test_fold_and_full_onnx_match_torch(head):
    model = random_network(tiny_spec(), head=head, seed=1)
    graph = model.graph((40, 56))
    folded = fold_network(model, graph)
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    # BN was randomised, so an unfolded (or wrongly folded) model differs by far more than 1e-4
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert float((bn.running_var - 1).abs().max()) > 0.1
    for got in (run_folded(folded, x.numpy()), _ort(full_model(folded), {"input": x.numpy()})):
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= 1e-4


def test_full_onnx_names_and_classifier():
    model = random_network(tiny_spec(num_classes=5), head=None, seed=2)
    graph = model.graph(48)
    folded = fold_network(model, graph)
    onnx_model = full_model(folded)
    assert [i.name for i in onnx_model.graph.input] == ["input"]
    assert [o.name for o in onnx_model.graph.output] == ["classifier.fc"]
    produced = {o for n in onnx_model.graph.node for o in n.output}
    assert {op.output for op in graph.ops} <= produced  # every layer's tensor keeps its op name
    x = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)[0].numpy()
    got = _ort(onnx_model, {"input": x.numpy()})[0]
    assert got.shape == (3, 5) and np.abs(ref - got).max() <= 1e-4
    assert {n.op_type for n in onnx_model.graph.node} >= {"Conv", "Clip", "Add", "GlobalAveragePool", "Gemm"}


def test_unexportable_ops_name_themselves():
    graph = random_network(tiny_spec(), head=HEAD).graph(32)
    i = next(k for k, op in enumerate(graph.ops) if op.name == "blocks.2.dw")
    op = graph.ops[i]
    bad = Op(**{**op.__dict__, "kernel": 4, "padding": 1})
    graph.ops[i] = bad
    with pytest.raises(TinydetError, match=r"blocks\.2\.dw.*block 2.*kernel 4 is even"):
        check_exportable(graph)
    graph.ops[i] = Op(**{**op.__dict__, "kind": "deconv"})
    with pytest.raises(TinydetError, match=r"blocks\.2\.dw.*'deconv' cannot be exported"):
        check_exportable(graph)


def test_arch_mismatch_is_reported():
    model = random_network(tiny_spec(), head=HEAD)
    other = random_network(tiny_spec(width=2.0), head=HEAD).graph(32)
    with pytest.raises(TinydetError, match="does not match the config's arch"):
        fold_network(model, other)
