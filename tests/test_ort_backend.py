"""OrtBackend on real ONNX Runtime: loading files and export dirs, hash verification, parity with PyTorch."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch

from tests.helpers import random_patch, small_loaded_model
from tuckertrt.backends import open_backend
from tuckertrt.backends.base import Backend
from tuckertrt.backends.ort_runner import OrtBackend, physical_cores
from tuckertrt.errors import TuckerTRTError
from tuckertrt.parity.export import export_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_loaded_model()
    out = tmp_path_factory.mktemp("ort") / "small"
    patch = random_patch((1, 1, *model.spec.patch_size), seed=1)
    return model, export_model(model, out, verify_input=patch, verify=False), patch


def torch_logits(model, patch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.network(torch.from_numpy(patch)).numpy()


def test_available_and_protocol(exported):
    model, result, _ = exported
    assert OrtBackend.available()
    backend = OrtBackend.load(result.out_dir)
    assert isinstance(backend, Backend)
    assert backend.input_shape == (1, 1, *model.spec.patch_size)


def test_export_dir_runs_like_torch(exported):
    model, result, patch = exported
    backend = open_backend("onnxruntime", result.out_dir, "fp32")
    logits = backend.run(patch)
    assert logits.dtype == np.float32 and logits.shape == (1, model.spec.num_classes, *model.spec.patch_size)
    np.testing.assert_allclose(logits, torch_logits(model, patch), atol=1e-4)
    facts = backend.describe()
    assert facts["provider"] == "CPUExecutionProvider" and facts["threads"] == physical_cores()
    assert facts["onnxruntime"] and facts["precision"] == "fp32"
    backend.close()


def test_fp16_from_dir_and_threads_option(exported):
    model, result, patch = exported
    backend = OrtBackend.load(result.out_dir, precision="fp16", threads=1)
    assert backend.describe()["threads"] == 1 and backend.artifact.name == "model_fp16.onnx"
    fp32 = torch_logits(model, patch)
    logits = backend.run(patch)
    assert logits.dtype == np.float32
    assert (logits.argmax(1) == fp32.argmax(1)).mean() > 0.99
    assert np.abs(logits - fp32).max() < 0.05


def test_plain_onnx_file_loads_without_manifest(exported, tmp_path):
    _, result, patch = exported
    copy = tmp_path / "any_name.onnx"
    shutil.copy(result.artifacts["fp32"], copy)
    assert OrtBackend.load(copy).run(patch).shape[1] == 5


def test_tampered_artifact_is_refused(exported, tmp_path):
    _, result, _ = exported
    broken = tmp_path / "export"
    shutil.copytree(result.out_dir, broken)
    graph = onnx.load(str(broken / "model.onnx"))
    graph.graph.initializer[0].raw_data = bytes(len(graph.graph.initializer[0].raw_data))
    onnx.save(graph, str(broken / "model.onnx"))
    with pytest.raises(TuckerTRTError, match="does not match its manifest"):
        OrtBackend.load(broken)


def test_bad_artifacts(exported, tmp_path):
    _, result, _ = exported
    with pytest.raises(TuckerTRTError, match="not found"):
        OrtBackend.load(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(TuckerTRTError, match="cannot read ONNX model"):
        OrtBackend.load(junk)
    with pytest.raises(TuckerTRTError, match="cannot load"):
        OrtBackend.load(junk, rewrite=False)
    with pytest.raises(TuckerTRTError, match="no manifest.json"):
        OrtBackend.load(tmp_path)
    with pytest.raises(TuckerTRTError, match="not int8"):
        OrtBackend.load(result.out_dir, precision="int8")
    with pytest.raises(TuckerTRTError, match="has no"):
        OrtBackend.load(result.out_dir, providers=["NoSuchExecutionProvider"])


def test_export_without_fp16_has_no_fp16_graph(tmp_path):
    model = small_loaded_model(num_classes=3)
    out = export_model(model, tmp_path / "x", fp16=False, verify=False,
                       verify_input=random_patch((1, 1, *model.spec.patch_size))).out_dir
    with pytest.raises(TuckerTRTError, match="no model_fp16.onnx"):
        OrtBackend.load(out, precision="fp16")
