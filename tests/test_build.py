"""``tuckertrt build`` end to end on the trained fixture model (the CI parity job), and pipeline fidelity."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli_stats import assert_one_line_error, run_cli
from tuckertrt.parity.export import export_model
from tuckertrt.graph.manifest import verify_artifact
from tuckertrt.inference.segment import Runner, segment_volume
from tuckertrt.decomposition import load_model
from tuckertrt.parity.metrics import compare_labels
from tuckertrt.data import example_ct


@pytest.fixture(scope="module")
def fixture_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "fixture_df05"
    result = run_cli("build", "fixture-3mm", "--df", "0.5", "--fp16", "--no-engines", "-o", str(out))
    return out, result


def test_build_writes_a_parity_report(fixture_build):
    """The narrow fixture does not keep its segmentation at DF 0.5: the gate fails, the build says so (exit 1) and
    its report names what would help, with the figures it measured."""
    out, result = fixture_build
    assert result.returncode == 1, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert not report["gates"]["passed"] and "FAILED" in result.stdout
    assert report["gates"]["mean_dice"] < 0.9 and report["init"] == "data"
    assert any("--distill" in lever for lever in report["levers"]), report["levers"]
    assert [c["held_out"] for c in report["cases"]] == [False, True]  # the example CT calibrated it; the DICOM not
    assert report["df"] == 0.5 and report["compression"]["compression_ratio"] > 2
    case = report["cases"][0]
    assert case["case"] == "example_ct" and report["cases"][1]["case"] == "example_ct_dicom"
    parity = case["parity"]["compressed"]
    assert 0 < parity["mean_dice"] <= 1 and parity["n_classes"] > 10
    # against TotalSegmentator's own labels of the same CT, for both models
    assert case["vs_reference"]["original"]["mean_dice"] > 0.5
    assert 0 < case["vs_reference"]["compressed"]["mean_dice"] <= 1
    for comparisons in report["export_comparisons"].values():
        assert comparisons["torch_vs_onnx_fp32"]["passed"]
    assert report["backend"]["choice"]["candidates"]
    md = (out / "report.md").read_text()
    assert "Parity gates" in md and "Dice vs reference" in md and "What would help" in md
    assert (out / "plots" / "dice_per_class.png").stat().st_size > 1000
    assert (out / "plots" / "latency.png").stat().st_size > 1000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_build_manifest_hashes_verify(fixture_build):
    out, _ = fixture_build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["decomposition"]["df"] == 0.5 and manifest["decomposition"]["ranks"]
    assert manifest["default_backend"]["reason"]
    assert {"onnx/original/model.onnx", "onnx/compressed/model_fp16.onnx"} <= set(manifest["artifacts"])
    for rel in manifest["artifacts"]:
        verify_artifact(out / rel)
    assert load_model(str(out / "model.pt")).decomposition["df"] == 0.5


def test_onnx_runtime_pipeline_reproduces_pytorch_on_example_ct(tmp_path):
    """Full-CT segmentation: ONNX Runtime FP32 vs PyTorch (Dice ≥ 0.999), FP16 graph (≥ 0.995)."""
    from tuckertrt.backends.registry import open_backend

    model = load_model("fixture-3mm")
    export = export_model(model, tmp_path / "onnx", fp16=True)
    torch_result = segment_volume(example_ct(), model)
    for precision, gate in (("fp32", 0.999), ("fp16", 0.995)):
        backend = open_backend("onnxruntime", export.artifacts[precision], precision=precision)
        result = segment_volume(example_ct(), Runner(model.spec, backend))
        score = compare_labels(torch_result.labels, result.labels, result.image.spacing)
        assert score.mean_dice >= gate, (precision, score.mean_dice)
        if precision == "fp32":
            assert np.mean(torch_result.labels == result.labels) > 0.9999


def test_build_of_the_original_passes_its_gate(tmp_path):
    """DF 1 is the original model: the gate holds and the build exits 0."""
    from tuckertrt.data import example_dicom

    out = tmp_path / "df1"
    result = run_cli("build", "fixture-3mm", "--df", "1", "--init", "hosvd", "--no-engines", "--backend",
                     "onnxruntime", "--validate", str(example_dicom()), "-o", str(out))
    assert result.returncode == 0 and "PASSED" in result.stdout, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["gates"]["passed"] and report["gates"]["mean_dice"] == 1.0 and report["levers"] == []


def test_build_refuses_bad_input(tmp_path):
    assert_one_line_error(run_cli("build", "fixture-3mm", "--df", "0", "-o", str(tmp_path / "x")), 2, "--df")
    ct_dir = tmp_path / "cts"
    ct_dir.mkdir()
    ct = ct_dir / "ct.nii.gz"
    ct.write_bytes(example_ct().read_bytes())
    assert_one_line_error(run_cli("build", "fixture-3mm", "--validate", str(ct), "-o", str(ct_dir)), 2,
                          "would overwrite the input")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli("build", "fixture-3mm", "-o", str(tmp_path / "busy")), 2,
                          "was not written by tuckertrt")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_build_with_distillation_reports_zero_shot_beside_distilled(tmp_path):
    out = tmp_path / "distilled"
    ct = example_ct()
    result = run_cli("build", "fixture-3mm", "--df", "0.5", "--distill", str(ct), "--distill-iterations", "2",
                     "--rtx", "--backend", "onnxruntime", "-o", str(out))
    assert result.returncode == 1 and "FAILED" in result.stdout, result.stderr  # 2 iterations recover too little
    report = json.loads((out / "report.json").read_text())
    case = report["cases"][0]
    assert set(case["seconds"]) == {"original", "zero-shot", "compressed"}
    assert {"zero-shot", "compressed"} <= set(case["parity"])
    d = report["distillation"]
    assert d["iterations"] == 2 and d["zero_shot"]["mean_dice"] is not None and d["recovered"]
    md = (out / "report.md").read_text()
    assert "| zero-shot | distilled |" in md and "held-out" in md
    assert load_model(str(out / "model.pt")).decomposition["df"] == 0.5
    # TensorRT-RTX engines are built ahead of time without a GPU; full TensorRT is skipped with its reason
    manifest = json.loads((out / "manifest.json").read_text())
    assert "trt" in manifest["engines_skipped"]
    engines = {k: v for k, v in manifest["engines"].items() if k.startswith("rtx/")}
    assert {"rtx/original/fp32", "rtx/compressed/fp32"} <= set(engines)
    for entry in engines.values():
        assert (out / entry["engine"]).stat().st_size > 0 and "trtrtx" in entry["engine"]
