"""ONNX export: graph structure, FP16 layout, manifest, the CLI, bad input; the full TS-3mm check (slow)."""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers import random_patch, small_loaded_model
from tests.test_cli_stats import assert_one_line_error, run_cli
from tuckertrt.decomposition import decompose
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import sha256_file
from tuckertrt.graph import load_manifest, update_manifest, verify_artifact
from tuckertrt.graph.export import torch_to_onnx
from tuckertrt.graph.manifest import add_artifact
from tuckertrt.graph.simplify import simplify
from tuckertrt.graph.structure import duplicated_initializers, initializer_types, op_counts, redundant_casts
from tuckertrt.models.checkpoint import save_results_folder
from tuckertrt.parity.export import export_model


def patch_for(model) -> np.ndarray:
    return random_patch((1, 1, *model.spec.patch_size), seed=2)


@pytest.fixture(scope="module")
def decomposed():
    return decompose(small_loaded_model(), df=0.5, policy="paper")


@pytest.fixture(scope="module")
def exported(decomposed, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "small_df0.5"
    return export_model(decomposed, out, verify_input=patch_for(decomposed), input_label="random")


def conv_nodes(graph: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in graph.graph.node if n.op_type in ("Conv", "ConvTranspose")]


def test_three_convs_per_decomposed_layer(exported, decomposed):
    graph = onnx.load(str(exported.artifacts["fp32"]))
    ranks = decomposed.decomposition["ranks"]
    layers = Counter(n.input[1].rsplit(".", 2)[0] for n in conv_nodes(graph) if ".core" in n.input[1]
                     or ".project_" in n.input[1])
    used = {layer for layer in ranks if f"{layer}.core.weight" in {n.input[1] for n in conv_nodes(graph)}}
    assert used and all(layers[layer] == 3 for layer in used)
    plain = [n for n in conv_nodes(graph) if n.input[1].rsplit(".", 2)[0] not in used]
    assert len(conv_nodes(graph)) == 3 * len(used) + len(plain)
    assert exported.manifest["graph"]["structure"] == {"conv_nodes": len(conv_nodes(graph)),
                                                       "decomposed_layers": len(used), "plain_convs": len(plain)}
    by_output = {n.output[0]: n for n in graph.graph.node}
    for layer in used:  # project_in -> core -> project_out, connected, with 1x1x1 projections
        core = next(n for n in conv_nodes(graph) if n.input[1] == f"{layer}.core.weight")
        project_in = by_output[core.input[0]]
        assert project_in.input[1] == f"{layer}.project_in.weight"
        kernel = next(a.ints for a in project_in.attribute if a.name == "kernel_shape")
        assert list(kernel) == [1, 1, 1]


def test_graph_is_clean_and_sized_by_parameters(exported, decomposed):
    graph = onnx.load(str(exported.artifacts["fp32"]))
    assert graph.opset_import[0].version >= 17
    assert [i.name for i in graph.graph.input] == ["input"] and [o.name for o in graph.graph.output] == ["logits"]
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, *decomposed.spec.patch_size]
    assert not duplicated_initializers(graph) and "Identity" not in op_counts(graph)
    params = sum(p.numel() for p in decomposed.network.parameters())
    stored = sum(int(np.prod(i.dims)) for i in graph.graph.initializer)
    # only the unused deep-supervision heads of the network are absent from the graph
    assert 0.9 * params <= stored <= params
    size = exported.artifacts["fp32"].stat().st_size
    assert 4 * stored <= size <= 4 * stored + 100_000
    fp16_size = exported.artifacts["fp16"].stat().st_size
    assert 2 * stored <= fp16_size <= 2 * stored + 100_000


def test_fp16_layout(exported):
    graph = onnx.load(str(exported.artifacts["fp16"]))
    assert not redundant_casts(graph)
    assert initializer_types(graph, "InstanceNormalization") == {"FLOAT"}
    assert initializer_types(graph, "Conv") == {"FLOAT16"}
    ops = op_counts(graph)
    assert ops["Cast"] == 2 * ops["InstanceNormalization"] + 2
    for value in (graph.graph.input[0], graph.graph.output[0]):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort.InferenceSession(str(exported.artifacts["fp16"]), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": random_patch((1, 1, 32, 32, 32))})[0].dtype == np.float32


def test_manifest(exported, decomposed):
    manifest = load_manifest(exported.out_dir)
    assert manifest["model"]["df"] == 0.5 and manifest["model"]["ranks"] == decomposed.decomposition["ranks"]
    assert manifest["model"]["source"] == "test:small" and manifest["graph"]["opset"] == 17
    assert manifest["graph"]["input_shape"] == [1, 1, 32, 32, 32]
    for tool in ("torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "polygraphy", "tuckertrt"):
        assert manifest["tools"][tool], tool
    for name, path in (("model.onnx", exported.artifacts["fp32"]), ("model_fp16.onnx", exported.artifacts["fp16"])):
        entry = manifest["artifacts"][name]
        assert entry["sha256"] == sha256_file(path) and entry["size"] == path.stat().st_size
        assert verify_artifact(path)["precision"] in ("fp32", "fp16")
    comparisons = manifest["comparisons"]
    assert set(comparisons) == {"original_vs_simplified", "torch_vs_onnx_fp32", "onnx_fp32_vs_fp16"}
    assert all(c["passed"] for c in comparisons.values())
    assert comparisons["torch_vs_onnx_fp32"]["stats"]["max_abs"] < 1e-4
    assert comparisons["onnx_fp32_vs_fp16"]["stats"]["argmax_agreement"] >= 0.999
    assert manifest["engines"] == {} and manifest["reports"] == {}
    update_manifest(exported.out_dir, "engines", "demo", {"file": "x.engine"})
    assert load_manifest(exported.out_dir)["engines"]["demo"] == {"file": "x.engine"}
    extra = exported.out_dir / "notes.bin"
    extra.write_bytes(b"123")
    with pytest.raises(TuckerTRTError, match="not listed"):
        verify_artifact(extra)
    add_artifact(exported.out_dir, extra, kind="notes")
    assert verify_artifact(extra) == {"sha256": sha256_file(extra), "size": 3, "kind": "notes"}
    assert not [p for p in exported.out_dir.parent.iterdir() if p.name.startswith(".")]


def test_dynamic_batch_and_onnxslim(tmp_path):
    model = small_loaded_model(num_classes=3)
    result = export_model(model, tmp_path / "dyn", dynamic_batch=4, simplifier="onnxslim", fp16=False,
                          verify_input=patch_for(model))
    graph = onnx.load(str(result.artifacts["fp32"]))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert result.manifest["graph"]["dynamic_batch"] == 4 and result.passed
    batch = np.concatenate([patch_for(model), random_patch((1, 1, 32, 32, 32), seed=5)])
    session = ort.InferenceSession(str(result.artifacts["fp32"]), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": batch})[0].shape == (2, 3, 32, 32, 32)


def test_simplifiers():
    model = small_loaded_model(num_classes=2)
    traced = torch_to_onnx(model.network, (1, 1, 32, 32, 32), 2, probe=(8, 8, 8))
    assert "Identity" in op_counts(traced)  # the exporter shares equal norm weights through Identity nodes
    for name in ("onnxsim", "onnxslim"):
        simplified, used = simplify(traced, name)
        assert used == name and "Identity" not in op_counts(simplified)
    assert simplify(traced, "none") == (traced, "none")
    with pytest.raises(TuckerTRTError, match="unknown simplifier"):
        simplify(traced, "magic")


def test_reexport_replaces_only_an_earlier_export(tmp_path):
    model = small_loaded_model(num_classes=2)
    out = tmp_path / "out"
    for _ in range(2):
        export_model(model, out, fp16=False, verify=False, verify_input=patch_for(model))
    assert sorted(p.name for p in out.iterdir()) == [".tuckertrt", "manifest.json", "model.onnx"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TuckerTRTError, match="was not written by tuckertrt"):
        export_model(model, foreign, verify=False, verify_input=patch_for(model))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (out / "notes.txt").write_text("a user's file added to an earlier export")
    with pytest.raises(TuckerTRTError, match=r"holds files tuckertrt did not write \(notes.txt\)"):
        export_model(model, out, fp16=False, verify=False, verify_input=patch_for(model))
    assert (out / "notes.txt").read_text().startswith("a user's file")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_bad_patch_and_outputs(tmp_path):
    model = small_loaded_model(num_classes=2)
    with pytest.raises(TuckerTRTError, match="does not fit the network"):
        export_model(model, tmp_path / "a", patch=(30, 32, 32))
    with pytest.raises(TuckerTRTError, match="axes"):
        export_model(model, tmp_path / "a", patch=(32, 32))
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(TuckerTRTError, match="not a directory"):
        export_model(model, afile)
    with pytest.raises(TuckerTRTError, match="cannot create|not writable"):
        export_model(model, "/proc/tuckertrt-test/out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process (fast); return exit code, stdout, stderr."""
    from tuckertrt.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error(result: tuple[int, str, str], match: str) -> None:
    code, _, err = result
    assert code == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("Error") and match in err, err


def test_cli_export_and_errors(tmp_path, capsys):
    folder = save_results_folder(small_loaded_model(num_classes=3), tmp_path / "results")
    out = tmp_path / "cli"
    code, stdout, err = cli(capsys, "export", str(folder), "--df", "0.5", "--policy", "paper",
                            "--patch", "16", "32", "32", "-o", str(out))
    assert code == 0, err
    assert "PASS torch_vs_onnx_fp32" in stdout and "model_fp16.onnx" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["graph"]["input_shape"] == [1, 1, 16, 32, 32] and manifest["model"]["df"] == 0.5
    assert_error(cli(capsys, "export", str(tmp_path / "nope")), "model not found")
    assert_error(cli(capsys, "export", str(folder), "--patch", "18", "32", "32", "-o", str(tmp_path / "b")),
                 "does not fit")
    (tmp_path / "f").write_text("")
    code, _, err = cli(capsys, "export", str(folder), "-o", str(tmp_path / "f"))  # refused before loading
    assert code == 2 and "not a folder" in err and err.count("\n") == 1
    assert_error(cli(capsys, "export", str(folder), "-o", "/proc/tuckertrt-test"), "cannot write")
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_one_subprocess_run(tmp_path):
    """The installed entry point: a user error is one line on stderr, no traceback."""
    assert_one_line_error(run_cli("export", str(tmp_path / "not-a-model")), 1, "model not found")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TUCKERTRT_FULL_PATCH") == "0", reason="TUCKERTRT_FULL_PATCH=0")
def test_ts3mm_full_patch_df03(tmp_path):
    """The real TS-3mm architecture at DF 0.3 on a 112x112x128 real-CT patch (about 2 minutes here)."""
    from tuckertrt.models import load_model

    model = decompose(load_model("ts-3mm"), df=0.3)
    result = export_model(model, tmp_path / "ts")
    comparisons = result.manifest["comparisons"]
    assert comparisons["original_vs_simplified"]["stats"]["max_abs"] == 0.0
    fp32 = comparisons["torch_vs_onnx_fp32"]["stats"]
    assert fp32["max_abs"] < 2e-3 and fp32["argmax_agreement"] > 0.999
    assert comparisons["onnx_fp32_vs_fp16"]["stats"]["argmax_agreement"] > 0.99
    assert result.manifest["graph"]["structure"]["decomposed_layers"] == len(model.decomposition["ranks"]) - 3
