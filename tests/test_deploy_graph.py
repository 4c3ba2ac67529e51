"""The graph CPU backends run: exact rewrites, the head after the sliding window; on real ONNX Runtime/OpenVINO."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from tests.helpers import random_patch, small_loaded_model
from tuckertrt.backends import open_backend
from tuckertrt.backends.ort_runner import OrtBackend
from tuckertrt.backends.ov_runner import OpenVinoBackend
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.fold import apply_folds
from tuckertrt.errors import TuckerTRTError
from tuckertrt.parity.export import export_model
from tuckertrt.graph.deploy import inference_graph
from tuckertrt.graph.head import split_head
from tuckertrt.graph import rank_space_norm
from tuckertrt.graph.rewrite import optimize
from tuckertrt.inference.sliding_window import sliding_window_argmax, sliding_window_features_argmax


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The small U-Net uncompressed, decomposed at DF 0.5, and decomposed with folded layers."""
    model = small_loaded_model()
    compressed = decompose(model, df=0.5, min_rank=2)
    folded = apply_folds(compressed, {"decoder.stages.1.convs.1.conv": "out", "encoder.stages.0.0.convs.1.conv": "in"})
    root = tmp_path_factory.mktemp("deploy")
    return {name: export_model(m, root / name, fp16=False, verify=False).artifacts["fp32"]
            for name, m in (("uncompressed", model), ("compressed", compressed), ("folded", folded))}


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("name", ["uncompressed", "compressed", "folded"])
def test_rewrites_remove_concats_and_keep_the_output(exports, name):
    original = onnx.load(str(exports[name]))
    rewritten, counts = optimize(original)
    onnx.checker.check_model(rewritten, full_check=True)
    assert counts["split_concats"] == _ops(original)["Concat"] == 2 and _ops(rewritten)["Concat"] == 0
    if name == "uncompressed":  # 3×3×3 convolutions never compose
        assert counts["composed_pairs"] == 0 and _ops(rewritten)["Conv"] == _ops(original)["Conv"] + 2
    else:  # per decoder stage: the transposed conv's output projection and the skip's input projection
        assert counts["composed_pairs"] >= 4 and _ops(rewritten)["Conv"] < _ops(original)["Conv"]
    patch = random_patch((1, 1, 32, 32, 32), seed=3)
    before = OrtBackend(original.SerializeToString()).run(patch)
    after = OrtBackend(rewritten.SerializeToString()).run(patch)
    np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-4)


def test_near_full_ranks_run_as_single_convolutions(tmp_path):
    """At DF 0.95 the small U-Net's ranks equal its channel counts: every decomposed layer composes back into one
    convolution (with the low-rank kernel), so the deployed graph has the uncompressed graph's convolutions."""
    model = small_loaded_model()
    exported, graphs = {}, {}
    for name, m in (("uncompressed", model), ("df0.95", decompose(model, df=0.95, min_rank=2))):
        exported[name] = onnx.load(str(export_model(m, tmp_path / name, fp16=False, verify=False).artifacts["fp32"]))
        graphs[name] = optimize(exported[name])[0]
    assert _ops(graphs["df0.95"]) == _ops(graphs["uncompressed"])
    patch = random_patch((1, 1, 32, 32, 32), seed=7)
    np.testing.assert_allclose(OrtBackend(graphs["df0.95"].SerializeToString()).run(patch),
                               OrtBackend(exported["df0.95"].SerializeToString()).run(patch), atol=1e-4, rtol=1e-4)


def test_rank_space_norm_replaces_projection_and_instance_norm(exports, monkeypatch):
    compressed = onnx.load(str(exports["compressed"]))
    assert optimize(compressed)[1]["rank_space_norms"] == 0  # 32³ patches of 8-32 channels: too small to pay
    monkeypatch.setattr(rank_space_norm, "MIN_ELEMENTS", 0)
    plain = optimize(compressed, rank_space_norm=False)[0]
    rewritten, counts = optimize(compressed)
    onnx.checker.check_model(rewritten, full_check=True)
    assert counts["rank_space_norms"] >= 4
    assert _ops(rewritten)["InstanceNormalization"] == _ops(plain)["InstanceNormalization"] - counts["rank_space_norms"]
    assert optimize(onnx.load(str(exports["uncompressed"])))[1]["rank_space_norms"] == 0  # no projections there
    patch = random_patch((1, 1, 32, 32, 32), seed=8)
    np.testing.assert_allclose(OrtBackend(rewritten.SerializeToString()).run(patch),
                               OrtBackend(compressed.SerializeToString()).run(patch), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not OpenVinoBackend.available(), reason="openvino is not installed")
def test_rank_space_norm_keeps_bf16_accuracy_when_the_mean_is_large(exports, monkeypatch, tmp_path):
    """A projection bias of 64 changes nothing in exact arithmetic (InstanceNorm removes it), but bf16 activations
    around 64 keep only ~0.25 of resolution. The rank-space form never forms them: it is more accurate."""
    model = onnx.load(str(exports["compressed"]))
    weights = {init.name: init for init in model.graph.initializer}
    normalised = {node.input[0] for node in model.graph.node if node.op_type == "InstanceNormalization"}
    for node in model.graph.node:
        if "project_out" in node.name and node.output[0] in normalised:
            bias = weights[node.input[2]]
            bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 64, bias.name))
    monkeypatch.setattr(rank_space_norm, "MIN_ELEMENTS", 0)
    patch = random_patch((1, 1, 32, 32, 32), seed=9)
    reference = OrtBackend(model.SerializeToString()).run(patch)
    errors = {}
    for rewrite in (False, True):
        path = tmp_path / f"rank_space_{rewrite}.onnx"
        onnx.save(optimize(model, rank_space_norm=rewrite)[0], str(path))
        backend = OpenVinoBackend.load(path, "bf16", rewrite=False)
        if backend.precision != "bf16":
            pytest.skip("this CPU has no bf16")
        errors[rewrite] = float(np.abs(backend.run(patch) - reference).mean())
    assert errors[True] < errors[False] / 2


def test_rewrites_name_what_they_add_uniquely_when_nodes_have_no_names(exports, monkeypatch):
    """ONNX node names are optional: every added tensor and weight still gets its own name."""
    model = onnx.load(str(exports["compressed"]))
    for node in model.graph.node:
        node.name = ""
    monkeypatch.setattr(rank_space_norm, "MIN_ELEMENTS", 0)
    rewritten, counts = optimize(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert counts["split_concats"] == 2 and counts["composed_pairs"] >= 4 and counts["rank_space_norms"] >= 4
    patch = random_patch((1, 1, 32, 32, 32), seed=10)
    np.testing.assert_allclose(OrtBackend(rewritten.SerializeToString()).run(patch),
                               OrtBackend(model.SerializeToString()).run(patch), atol=1e-4, rtol=1e-4)


def test_rewrite_leaves_the_input_model_alone(exports):
    original = onnx.load(str(exports["compressed"]))
    snapshot = original.SerializeToString()
    optimize(original)
    assert original.SerializeToString() == snapshot


def test_split_head_gives_channels_last_features_and_the_same_logits(exports):
    original = onnx.load(str(exports["compressed"]))
    backbone, head = split_head(original)
    assert (head.num_classes, head.num_features) == (5, 8)
    assert backbone.graph.output[0].name == "features" and _ops(backbone)["Transpose"] == 1
    patch = random_patch((1, 1, 32, 32, 32), seed=4)
    logits = OrtBackend(original.SerializeToString()).run(patch)
    features = OrtBackend(backbone.SerializeToString()).run(patch)
    assert features.shape == (1, 32, 32, 32, 8)
    np.testing.assert_allclose(np.moveaxis(head.logits(features[0]), -1, 0), logits[0], atol=1e-4)
    assert (head.labels(features[0]) == logits[0].argmax(0)).all()


def test_head_modes(exports, tmp_path):
    with pytest.raises(TuckerTRTError, match="head must be one of"):
        inference_graph(exports["compressed"], head="cpu")
    assert inference_graph(exports["compressed"], rewrite=False).model is None  # the file itself, untouched
    original = onnx.load(str(exports["compressed"]))
    softmax = onnx.helper.make_node("Softmax", [original.graph.output[0].name], ["probabilities"], axis=1)
    original.graph.node.append(softmax)
    original.graph.output[0].name = "probabilities"
    path = tmp_path / "softmax.onnx"
    onnx.save(original, str(path))
    with pytest.raises(TuckerTRTError, match="does not end in a 1x1 convolution"):
        inference_graph(path, head="host")
    auto = inference_graph(path, head="auto")
    assert auto.head is None and auto.describe()["head"] == "graph"


@pytest.mark.parametrize("backend,shape", [("onnxruntime", (45, 40, 37)), ("openvino", (45, 40, 37)),
                                           ("onnxruntime", (30, 32, 25))])  # the last: one tile, no accumulation
def test_sliding_window_over_features_matches_logits(exports, backend, shape):
    if backend == "openvino" and not OpenVinoBackend.available():
        pytest.skip("openvino is not installed")
    volume = random_patch((1, *shape), seed=5)
    logits = open_backend(backend, exports["compressed"], "fp32", rewrite=False)
    features = open_backend(backend, exports["compressed"], "fp32", head="auto")
    assert logits.head is None and features.head is not None
    assert features.describe()["head"] == "host" and features.describe()["graph_rewrites"]["split_concats"] == 2
    expected = sliding_window_argmax(volume, logits.run, (32, 32, 32), 5, tile_step=0.5)
    labels = sliding_window_features_argmax(volume, features.run, (32, 32, 32), features.head, tile_step=0.5)
    assert labels.shape == expected.shape == volume.shape[1:]
    assert (labels == expected).mean() > 0.999


@pytest.mark.skipif(not OpenVinoBackend.available(), reason="openvino is not installed")
def test_openvino_bf16_features_leave_the_graph_in_bf16(exports):
    backend = open_backend("openvino", exports["compressed"], "bf16", head="host")
    patch = random_patch((1, 1, 32, 32, 32), seed=6)
    features = backend.run(patch)
    if backend.precision == "bf16":
        assert features.dtype.name == "bfloat16"
    reference = open_backend("openvino", exports["compressed"], "fp32", rewrite=False).run(patch)
    assert (backend.head.labels(features[0]) == reference[0].argmax(0)).mean() > 0.9


@pytest.mark.skipif(not OpenVinoBackend.available(), reason="openvino is not installed")
@pytest.mark.parametrize("head", ["auto", "graph"])  # bf16 features; float32 logits
def test_openvino_runs_into_new_arrays_and_after_releasing_memory(exports, head):
    """Each patch's output is a new array the runtime wrote into (the next patch leaves it alone); freeing the
    working memory (between CTs) changes no result."""
    from tuckertrt.inference.segment import Runner

    backend = open_backend("openvino", exports["compressed"], "bf16", head=head)
    patches = {seed: random_patch((1, 1, 32, 32, 32), seed=seed) for seed in (7, 8)}
    first, second, again = (backend.run(patches[seed]) for seed in (7, 8, 7))
    assert not np.shares_memory(first, again) and np.array_equal(first.view(np.uint8), again.view(np.uint8))
    assert not np.array_equal(first.view(np.uint8), second.view(np.uint8))
    labels = backend.head.labels(first[0]) if head == "auto" else None
    Runner(None, backend).release_memory()  # the network's and the head kernels' working memory
    after = backend.run(patches[7])
    assert np.array_equal(first.view(np.uint8), after.view(np.uint8))
    if labels is not None:
        assert np.array_equal(backend.head.labels(first[0]), labels)


@pytest.mark.parametrize("max_bytes", [10, 1 << 30])  # float16 accumulator, float32 accumulator
def test_feature_accumulator_reaches_every_voxel(max_bytes):
    """Tile edges carry Gaussian weights of ~1e-8; a float16 accumulator must still see them."""
    from tuckertrt.graph.head import LinearHead

    head = LinearHead(np.eye(3, dtype=np.float32), np.zeros(3, dtype=np.float32))
    features = np.broadcast_to(np.array([0.0, 1.0, 0.0], np.float32), (1, 16, 16, 16, 3))
    labels = sliding_window_features_argmax(np.zeros((1, 20, 20, 20), np.float32), lambda x: features.copy(),
                                            (16, 16, 16), head, tile_step=0.5, max_accumulator_bytes=max_bytes)
    assert (labels == 1).all()
    one_hot = np.broadcast_to(np.array([0.0, 1.0, 0.0], np.float32)[:, None, None, None], (1, 3, 16, 16, 16))
    logits_labels = sliding_window_argmax(np.zeros((1, 20, 20, 20), np.float32), lambda x: one_hot.copy(),
                                          (16, 16, 16), 3, tile_step=0.5, max_accumulator_bytes=max_bytes)
    assert (logits_labels == 1).all()
