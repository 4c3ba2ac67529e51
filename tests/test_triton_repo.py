"""Triton model repositories for an exported network, checked with Triton's own model-config protobuf classes."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.helpers import run_main
from tuckertrt.cli import main
from tuckertrt.fileio import read_json, sha256_file

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

TRITON_TYPES = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32, onnx.TensorProto.FLOAT16: model_config_pb2.TYPE_FP16}


run_cli = run_main


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """fixture-3mm exported (FP32 and FP16), with a Triton repository written by ``export --triton-repo``."""
    root = tmp_path_factory.mktemp("triton")
    main(["export", "fixture-3mm", "-o", str(root / "export"), "--no-verify", "--triton-repo", str(root / "repo")])
    return root


def parse_config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_against_graph(config, onnx_path: Path) -> None:
    graph = onnx.load(str(onnx_path)).graph
    for tensors, declared in ((graph.input, config.input), (graph.output, config.output)):
        assert [t.name for t in tensors] == [d.name for d in declared]
        for t, d in zip(tensors, declared):
            assert TRITON_TYPES[t.type.tensor_type.elem_type] == d.data_type
            assert [x.dim_value for x in t.type.tensor_type.shape.dim] == list(d.dims)


def test_export_writes_an_onnxruntime_repository(exported):
    folder = exported / "repo" / "fixture-3mm"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.name != ".tuckertrt") == ["1", "1/model.onnx",
                                                                                  "config.pbtxt"]
    config = parse_config(folder / "config.pbtxt")
    manifest = read_json(exported / "export" / "manifest.json")
    assert (config.name, config.backend, config.default_model_filename) == ("fixture-3mm", "onnxruntime",
                                                                            "model.onnx")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")  # static batch-1 export
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    check_against_graph(config, folder / "1" / "model.onnx")
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["tuckertrt.onnx_sha256"] == manifest["artifacts"]["model.onnx"]["sha256"] \
        == sha256_file(folder / "1" / "model.onnx")
    assert params["tuckertrt.checkpoint_sha256"] == manifest["model"]["checkpoint_sha256"]


def test_triton_command_writes_openvino_and_fp16_models_beside_it(exported, capsys):
    repo = exported / "repo"
    code, out, err = run_cli(["triton", exported / "export", "-o", repo, "--backend", "openvino", "--name", "ov"],
                             capsys)
    assert code == 0, err
    assert "Triton model ov (openvino" in out
    config = parse_config(repo / "ov" / "config.pbtxt")
    assert (config.backend, config.default_model_filename) == ("openvino", "model.xml")
    assert (repo / "ov" / "1" / "model.bin").stat().st_size > 1_000_000
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["tuckertrt.model_file_sha256"] == sha256_file(repo / "ov" / "1" / "model.xml")
    check_against_graph(config, exported / "export" / "model.onnx")

    code, out, err = run_cli(["triton", exported / "export", "-o", repo, "--precision", "fp16", "--name", "half"],
                             capsys)
    assert code == 0, err
    check_against_graph(parse_config(repo / "half" / "config.pbtxt"), exported / "export" / "model_fp16.onnx")


def test_refuses_to_replace_a_model_or_serve_a_changed_onnx(exported, capsys, tmp_path):
    repo = exported / "repo"
    before = (repo / "fixture-3mm" / "config.pbtxt").read_bytes()
    code, _, err = run_cli(["triton", exported / "export", "-o", repo], capsys)
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    assert (repo / "fixture-3mm" / "config.pbtxt").read_bytes() == before

    code, _, err = run_cli(["triton", exported / "export", "-o", tmp_path / "r", "--backend", "tensorrt"], capsys)
    assert code == 2 and "--engine" in err

    changed = tmp_path / "export"
    changed.mkdir()
    (changed / "manifest.json").write_bytes((exported / "export" / "manifest.json").read_bytes())
    data = bytearray((exported / "export" / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (changed / "model.onnx").write_bytes(bytes(data))
    code, _, err = run_cli(["triton", changed, "-o", tmp_path / "r"], capsys)
    assert code == 1 and "does not match the sha256" in err
    assert not (tmp_path / "r").exists()
