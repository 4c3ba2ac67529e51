"""Polygraphy comparisons: the segmentation compare function, runners, CT patches and the compare command."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from polygraphy.backend.onnxrt import OnnxrtRunner

from tests.helpers import random_patch, small_loaded_model
from tests.test_export import assert_error, cli
from tuckertrt.backends.ort_runner import OrtBackend
from tuckertrt.backends.torch_runner import TorchBackend
from tuckertrt.decomposition import decompose
from tuckertrt.errors import TuckerTRTError
from tuckertrt.parity.export import export_model
from tuckertrt.models.checkpoint import save_results_folder
from tuckertrt.data import example_ct
from tuckertrt.parity.compare import (BackendRunner, Tolerance, compare_backends, compare_runs, ct_patch, logit_stats,
                                      polygraphy_runner, tolerance_for)



def two_class_logits(margins: list[float]) -> np.ndarray:
    """(1, 2, n) logits whose class-1 minus class-0 margin is ``margins``."""
    m = np.asarray(margins, dtype=np.float32)
    return np.stack([np.zeros_like(m), m])[None]


def test_logit_stats_counts_flips_and_ties():
    a = two_class_logits([1.0, 1.0, 0.001, -1.0])
    b = two_class_logits([1.0, 1.0, -0.001, -1.0])  # one near-tied voxel flips
    stats = logit_stats(a, b, Tolerance(atol=1e-2, min_argmax=0.9))
    assert stats.argmax_agreement == 0.75 and not stats.passed and stats.voxels == 4
    assert stats.max_abs == pytest.approx(0.002) and stats.median_abs == 0.0
    tied = logit_stats(a, b, Tolerance(atol=1e-2, min_argmax=0.9, tie_margin=0.01))
    assert tied.passed and tied.decisive_agreement == 1.0 and tied.near_ties == 0.25
    assert "decisive" in str(tied)
    assert not logit_stats(a, a + 0.5, Tolerance(atol=1e-2, min_argmax=0.0))
    nan = a.copy()
    nan[0, 0, 0] = np.nan
    assert not logit_stats(a, nan, Tolerance(atol=None, min_argmax=0.0))
    with pytest.raises(TuckerTRTError, match="shape"):
        logit_stats(a, a[:, :, :2], Tolerance(None, 0.0))


def test_tolerance_by_lower_precision():
    assert tolerance_for("fp32", "fp32").atol is not None
    assert tolerance_for("fp32", "fp16") == tolerance_for("fp16", "fp32")
    assert tolerance_for("fp32", "fp16").atol is None and tolerance_for("fp16", "fp16").min_argmax >= 0.999
    assert tolerance_for("int8", "fp16").min_argmax < tolerance_for("fp16", "fp16").min_argmax


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = decompose(small_loaded_model(), df=0.5, policy="paper")
    patch = random_patch((1, 1, *model.spec.patch_size), seed=3)
    out = tmp_path_factory.mktemp("cmp") / "small"
    return model, export_model(model, out, verify_input=patch, input_label="random"), patch


def test_torch_vs_onnxruntime_through_polygraphy(exported):
    model, result, patch = exported
    torch_backend = TorchBackend(model.network, patch.shape, device="cpu")
    ort_backend = OrtBackend.load(result.out_dir)
    assert isinstance(polygraphy_runner(torch_backend, "t"), BackendRunner)
    assert isinstance(polygraphy_runner(ort_backend, "o"), OnnxrtRunner)
    comparison = compare_backends(torch_backend, ort_backend, patch, labels=("torch", "ort"))
    assert comparison.passed and comparison.verdict == "PASS"
    assert comparison.stats.max_abs < 1e-4 and comparison.stats.argmax_agreement == 1.0
    data = json.loads(json.dumps(comparison.to_json()))
    assert data["a"]["backend"] == "torch" and data["b"]["provider"] == "CPUExecutionProvider"
    assert set(data["stats"]) >= {"max_abs", "median_abs", "p99_abs", "argmax_agreement"}
    assert data["seconds"]["torch"] > 0 and data["seconds"]["ort"] > 0


def test_one_run_many_pairs(exported):
    model, result, patch = exported
    backends = {"torch": TorchBackend(model.network, patch.shape, device="cpu"),
                "fp32": OrtBackend.load(result.out_dir), "fp16": OrtBackend.load(result.out_dir, "fp16")}
    results = compare_runs(backends, [("torch", "fp32", None), ("fp32", "fp16", None)], patch)
    assert set(results) == {"torch_vs_fp32", "fp32_vs_fp16"}
    assert results["fp32_vs_fp16"].tolerance == tolerance_for("fp32", "fp16")
    assert results["torch_vs_fp32"].stats.max_abs < results["fp32_vs_fp16"].stats.max_abs


def test_ct_patch_is_normalised_real_ct_in_zyx_order():
    spec = small_loaded_model().spec
    xyz = np.asanyarray(nib.load(str(example_ct())).dataobj)  # 122 x 101 x 112
    patch = ct_patch(spec, (112, 112, 128))
    assert patch.shape == (1, 1, 112, 112, 128) and patch.dtype == np.float32
    p = spec.intensity
    expected = (np.clip(xyz.transpose(2, 1, 0).astype(np.float32), p.lower, p.upper) - p.mean) / p.std
    # z: 112 fits exactly; y: 101 padded to 112 (5 before); x: 122 padded to 128 (3 before)
    np.testing.assert_allclose(patch[0, 0, :, 5:106, 3:125], expected, rtol=1e-6)
    assert (patch[0, 0, :, :5] == 0).all()
    small = ct_patch(spec, (32, 32, 32))
    np.testing.assert_allclose(small[0, 0], expected[40:72, 34:66, 45:77], rtol=1e-6)


def test_ct_patch_errors(tmp_path):
    spec = small_loaded_model().spec
    with pytest.raises(TuckerTRTError, match="not found"):
        ct_patch(spec, ct_path=tmp_path / "none.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"nope")
    with pytest.raises(TuckerTRTError, match="not a readable NIfTI"):
        ct_patch(spec, ct_path=bad)


def test_cli_compare(exported, tmp_path, capsys):
    model, result, patch = exported
    npy = tmp_path / "patch.npy"
    np.save(npy, patch[0, 0])
    code, out, err = cli(capsys, "compare", str(result.out_dir), str(result.out_dir / "model_fp16.onnx"),
                         "--input", str(npy), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["verdict"] == "PASS" and data["b"]["precision"] == "fp16" and data["input"] == "npy patch.npy"
    folder = save_results_folder(small_loaded_model(), tmp_path / "res")
    code, out, _ = cli(capsys, "compare", str(folder), str(result.out_dir), "--input", str(npy))
    assert code == 1 and out.startswith("FAIL")  # the original network vs its DF 0.5 export
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((8, 8, 8), np.float32))
    assert_error(cli(capsys, "compare", str(result.out_dir), str(result.out_dir), "--input", str(wrong)),
                 "has shape")
    assert_error(cli(capsys, "compare", str(result.out_dir), str(tmp_path / "missing")), "model not found")
    code, _, err = cli(capsys, "compare", "a", "b", "--input", str(npy), "--ct", "x.nii.gz")
    assert code == 2 and "not both" in err


@pytest.mark.slow
def test_trained_fixture_agrees_fully_on_real_ct(tmp_path, capsys):
    """The trained fixture model (not random weights): torch vs ORT FP32 agree on every voxel of a CT patch."""
    code, out, err = cli(capsys, "export", "fixture-3mm", "-o", str(tmp_path / "fx"), "--json")
    assert code == 0, err
    comparisons = json.loads(out)["comparisons"]
    assert comparisons["torch_vs_onnx_fp32"]["stats"]["argmax_agreement"] == 1.0
    assert comparisons["torch_vs_onnx_fp32"]["stats"]["decisive_agreement"] is None  # trained: all voxels count
    assert comparisons["onnx_fp32_vs_fp16"]["stats"]["argmax_agreement"] >= 0.999
    code, out, _ = cli(capsys, "compare", "fixture-3mm", str(tmp_path / "fx"))
    assert code == 0 and out.startswith("PASS: torch:fixture-3mm")
