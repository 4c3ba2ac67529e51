"""OpenVinoBackend on the real OpenVINO CPU plugin: precisions, cache, profiling, errors."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tests.helpers import random_patch, small_loaded_model
from tuckertrt.backends import open_backend
from tuckertrt.backends import ov_runner
from tuckertrt.backends.base import Backend
from tuckertrt.backends.ov_runner import OpenVinoBackend
from tuckertrt.errors import MissingDependencyError, TuckerTRTError
from tuckertrt.parity.export import export_model

pytestmark = pytest.mark.skipif(not OpenVinoBackend.available(), reason="openvino is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_loaded_model()
    out = tmp_path_factory.mktemp("ov") / "small"
    patch = random_patch((1, 1, *model.spec.patch_size), seed=1)
    with torch.inference_mode():
        reference = model.network(torch.from_numpy(patch)).numpy()
    return model, export_model(model, out, fp16=False, verify=False), patch, reference


def test_f32_matches_torch_from_export_dir(exported):
    model, result, patch, reference = exported
    backend = open_backend("openvino", result.out_dir, precision="fp32", threads=1)
    assert isinstance(backend, Backend)
    assert backend.input_shape == (1, 1, *model.spec.patch_size)
    logits = backend.run(patch)
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, atol=1e-3)
    facts = backend.describe()
    assert facts["precision"] == "fp32" and facts["threads"] == 1 and facts["source"].endswith("model.onnx")
    backend.close()


def test_bf16_or_stated_fallback(exported):
    _, result, patch, reference = exported
    backend = OpenVinoBackend.load(result.artifacts["fp32"], precision="bf16", threads=1)
    if "BF16" in ov_runner.cpu_capabilities():
        assert backend.precision == "bf16" and "notes" not in backend.describe()
    else:
        assert backend.precision == "fp32" and "bf16" in backend.describe()["notes"][0]
    assert (backend.run(patch).argmax(1) == reference.argmax(1)).mean() > 0.95


def test_cpu_without_bf16_falls_back_to_f32_and_says_so(exported, monkeypatch):
    _, result, patch, reference = exported
    monkeypatch.setattr(ov_runner, "cpu_capabilities", lambda core=None: ["FP32", "INT8"])
    with pytest.warns(UserWarning, match="no BF16 support"):
        backend = OpenVinoBackend.load(result.artifacts["fp32"], precision="bf16")
    assert backend.precision == "fp32" and backend.requested == "bf16"
    assert "running in f32" in backend.describe()["notes"][0]
    np.testing.assert_allclose(backend.run(patch), reference, atol=1e-3)


def test_cache_dir_is_filled_reused_and_survives_corruption(exported, tmp_path):
    _, result, patch, reference = exported
    cache = tmp_path / "cache"
    first = OpenVinoBackend.load(result.artifacts["fp32"], precision="fp32", cache_dir=cache)
    blobs = [p for p in cache.iterdir() if p.is_file()]
    assert blobs, "OpenVINO wrote no compiled blob into the cache"
    expected = first.run(patch)
    second = OpenVinoBackend.load(result.artifacts["fp32"], precision="fp32", cache_dir=cache)
    np.testing.assert_array_equal(second.run(patch), expected)
    for blob in blobs:
        blob.write_bytes(b"not a compiled model")
    third = OpenVinoBackend.load(result.artifacts["fp32"], precision="fp32", cache_dir=cache)
    np.testing.assert_allclose(third.run(patch), reference, atol=1e-3)


def test_cache_path_that_is_a_file_is_a_clear_error(exported, tmp_path):
    _, result, _, _ = exported
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("x")
    with pytest.raises(TuckerTRTError, match="not a directory"):
        OpenVinoBackend.load(result.artifacts["fp32"], cache_dir=not_a_dir)


def test_profile_lists_executed_nodes(exported):
    _, result, patch, _ = exported
    backend = OpenVinoBackend.load(result.artifacts["fp32"], precision="bf16", threads=1, profile=True)
    backend.run(patch)
    nodes = backend.profile()
    assert {"Convolution", "MVN"} <= {n["type"] for n in nodes}
    assert all(n["seconds"] >= 0 for n in nodes)
    plain = OpenVinoBackend.load(result.artifacts["fp32"], precision="fp32")
    with pytest.raises(TuckerTRTError, match="profile=True"):
        plain.profile()


def test_bad_inputs_are_one_line_errors(exported, tmp_path):
    _, result, patch, _ = exported
    with pytest.raises(TuckerTRTError, match="not found"):
        OpenVinoBackend.load(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(TuckerTRTError, match="cannot read ONNX model"):
        OpenVinoBackend.load(junk, precision="fp32")
    with pytest.raises(TuckerTRTError, match="cannot compile"):
        OpenVinoBackend.load(junk, precision="fp32", rewrite=False)
    with pytest.raises(TuckerTRTError, match="precision"):
        OpenVinoBackend.load(result.artifacts["fp32"], precision="fp8")
    with pytest.raises(TuckerTRTError, match="no quantisation"):
        OpenVinoBackend.load(result.artifacts["fp32"], precision="int8")
    with pytest.raises(TuckerTRTError, match="unknown OpenVINO option"):
        OpenVinoBackend.load(result.artifacts["fp32"], precison="fp32")
    backend = OpenVinoBackend.load(result.artifacts["fp32"], precision="fp32")
    with pytest.raises(TuckerTRTError, match="does not match"):
        backend.run(patch[:, :, :16])


def test_missing_openvino_is_a_dependency_error(exported, monkeypatch):
    _, result, _, _ = exported
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match="openvino is not installed"):
        OpenVinoBackend.load(result.artifacts["fp32"])
