"""INT8: the calibration case list, Q/DQ ONNX (ONNX Runtime static quantisation) and NNCF for OpenVINO."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.helpers import random_patch, small_loaded_model
from tuckertrt.backends import open_backend
from tuckertrt.decomposition import decompose
from tuckertrt.errors import TuckerTRTError
from tuckertrt.parity.export import export_model
from tuckertrt.data import example_ct
from tuckertrt.inference.calibration import CalibrationSet, load_calibration
from tuckertrt.quantization import quantize_openvino, quantize_qdq



@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    original = small_loaded_model()
    out = {}
    for key, model in {"original": original, "df0.5": decompose(original, df=0.5)}.items():
        out[key] = export_model(model, root / key, fp16=False, verify=False).artifacts["fp32"]
    return original, out


def calibration_patches(spec, count=3):
    return [random_patch((1, 1, *spec.patch_size), seed=s) for s in range(count)]


def test_case_list_gives_reproducible_ct_patches(tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"seed": 3, "patches_per_case": 2, "cases": [str(example_ct())]}))
    calibration = load_calibration(cases)
    spec = small_loaded_model().spec
    first, second = list(calibration.patches(spec)), list(calibration.patches(spec))
    assert len(first) == 2 and first[0].shape == (1, 1, *spec.patch_size)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1])
    assert calibration.describe()["seed"] == 3


def test_shipped_case_list_resolves_against_the_bundled_examples():
    from tuckertrt.data import calibration_list

    assert load_calibration(calibration_list()).cases == [example_ct()]


def test_bad_case_lists_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TuckerTRTError, match="not valid JSON"):
        load_calibration(bad)
    bad.write_text(json.dumps({"cases": []}))
    with pytest.raises(TuckerTRTError, match="non-empty"):
        load_calibration(bad)
    bad.write_text(json.dumps({"cases": ["nowhere.nii.gz"]}))
    with pytest.raises(TuckerTRTError, match="not found"):
        load_calibration(bad)
    bad.write_text(json.dumps({"cases": [str(bad)], "patches_per_case": 0}))
    with pytest.raises(TuckerTRTError, match="patches_per_case"):
        load_calibration(bad)


@pytest.mark.parametrize("key", ["original", "df0.5"])
def test_qdq_is_explicit_symmetric_int8_and_runs(models, tmp_path, key):
    model, onnx_files = models
    target = quantize_qdq(onnx_files[key], tmp_path / "qdq.onnx", calibration_patches(model.spec))
    graph = onnx.load(str(target))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    zero_points = [numpy_helper.to_array(i) for i in graph.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and not any(z.any() for z in zero_points)  # symmetric: TensorRT-ready
    assert {z.dtype for z in zero_points} <= {np.dtype(np.int8), np.dtype(np.int32)}  # int32: conv biases
    quantized_weights = {n.input[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
    assert not any(i.name in quantized_weights for i in graph.graph.initializer if ".norm." in i.name)
    patch = random_patch((1, 1, *model.spec.patch_size), seed=7)
    reference = open_backend("onnxruntime", onnx_files[key]).run(patch).argmax(1)
    for backend, precision in (("onnxruntime", "fp32"), ("openvino", "int8")):
        labels = open_backend(backend, target, precision=precision).run(patch).argmax(1)
        assert (labels == reference).mean() > 0.7
    assert not list(tmp_path.glob("*.part"))


def test_nncf_ir_runs_as_int8_on_openvino(models, tmp_path):
    pytest.importorskip("nncf")
    model, onnx_files = models
    xml = quantize_openvino(onnx_files["df0.5"], tmp_path / "m.xml", calibration_patches(model.spec))
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    backend = open_backend("openvino", xml, precision="int8", threads=1)
    patch = random_patch((1, 1, *model.spec.patch_size), seed=7)
    reference = open_backend("onnxruntime", onnx_files["df0.5"]).run(patch).argmax(1)
    assert backend.precision == "int8" and (backend.run(patch).argmax(1) == reference).mean() > 0.7
    with pytest.raises(TuckerTRTError, match=".xml"):
        quantize_openvino(onnx_files["df0.5"], tmp_path / "m.onnx", calibration_patches(model.spec))


def test_empty_calibration_is_an_error(models, tmp_path):
    pytest.importorskip("nncf")
    original, onnx_files = models
    with pytest.raises(TuckerTRTError, match="no calibration"):
        quantize_openvino(onnx_files["original"], tmp_path / "m.xml", [])
    with pytest.raises(TuckerTRTError, match="no calibration"):  # a case list whose cases give no patch
        quantize_openvino(onnx_files["original"], tmp_path / "m.xml", CalibrationSet([], 0, 2).patches(original.spec))
