"""``tuckertrt segment``: the example CT with the trained fixture, bad inputs, batches with a failing case."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob_ct
from tuckertrt.cli import main
from tuckertrt.models.presets import ts_total_classes
from tuckertrt.parity.metrics import compare_labels, relabel_by_name


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(["segment", *map(str, args)])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def small_ct(write_ct, name: str = "ct.nii.gz") -> Path:
    return write_ct(blob_ct((40, 36, 16), (20.0, 18.0, 8.0), 4.0), np.diag([3.0, 3.0, 3.0, 1.0]), name)


def test_segments_the_example_ct_in_its_own_grid(shared_data, tmp_path, capsys):
    ct = shared_data / "example_ct_sm.nii.gz"
    out = tmp_path / "sm_seg.nii.gz"
    code, stdout, err = run_cli([ct, "-o", out, "--model", "fixture-3mm"], capsys)
    assert code == 0, err
    assert "example_ct_sm:" in stdout
    seg, source = nib.load(out), nib.load(ct)
    assert seg.shape == source.shape == (122, 101, 30) and np.allclose(seg.affine, source.affine)
    sidecar = json.loads((tmp_path / "sm_seg.json").read_text())
    names = {int(k): v for k, v in sidecar["labels"].items()}
    # example_ct_sm is slices 82..111 along the third (S) axis of example_ct; both are RAS.
    full = nib.load(shared_data / "example_ct.nii.gz")
    assert nib.aff2axcodes(full.affine) == nib.aff2axcodes(source.affine) == ("R", "A", "S")
    assert np.array_equal(np.asarray(full.dataobj)[:, :, 82:112], np.asarray(source.dataobj))
    reference = np.asarray(nib.load(shared_data / "example_seg_fast_force_split.nii.gz").dataobj)[:, :, 82:112]
    prediction = relabel_by_name(np.asarray(seg.dataobj), names, ts_total_classes())
    scores = compare_labels(reference, prediction, seg.header.get_zooms(), ts_total_classes())
    print(f"fixture-3mm on example_ct_sm: mean Dice {scores.mean_dice:.4f}, NSD@2mm {scores.mean_nsd:.4f} over "
          f"{len(scores.classes)} reference classes")
    assert scores.mean_dice > 0.9


def _broken_affine(write_ct, row: str, values: list[float]) -> Path:
    """A NIfTI whose only affine (the sform) has ``row`` replaced (nibabel refuses to create one directly)."""
    path = small_ct(write_ct)
    img = nib.load(path)
    img.header[row] = values
    raw = nib.Nifti1Image(np.asarray(img.dataobj), None, img.header)
    raw.header.set_qform(None, code=0)
    nib.save(raw, path)
    return path


BAD_INPUTS = {
    "4D": (lambda w: w(np.full((10, 10, 10, 3), -1000), np.eye(4)), "4D"),
    "2D": (lambda w: w(np.full((20, 20), -1000), np.eye(4)), "2D"),
    "single slice": (lambda w: w(np.full((20, 20, 1), -1000), np.eye(4)), "single slice"),
    "not an image": (lambda w: _text_file(w, "ct.nii.gz"), "not a readable NIfTI"),
    "other file type": (lambda w: _text_file(w, "ct.txt"), "neither a NIfTI"),
    "singular affine": (lambda w: _broken_affine(w, "srow_y", [0.0, 0.0, 0.0, 0.0]), "singular affine"),
    "NaN affine": (lambda w: _broken_affine(w, "srow_x", [np.nan, 0.0, 0.0, 0.0]), "NaN"),
    "not CT": (lambda w: w(np.random.default_rng(0).integers(0, 900, (20, 20, 10)), np.eye(4)),
               "does not look like a CT"),
}


def _text_file(write_ct, name: str) -> Path:
    path = write_ct(np.zeros((2, 2, 2)), np.eye(4))  # just to get the tmp folder
    path.unlink()
    target = path.with_name(name)
    target.write_text("not an image\n")
    return target


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_and_writes_nothing(case, write_ct, tmp_path, capsys):
    make, message = BAD_INPUTS[case]
    path = make(write_ct)
    before = listing(tmp_path)
    code, _, err = run_cli([path, "-o", tmp_path / "out" / "seg.nii.gz", "--model", "fixture-3mm"], capsys)
    assert code != 0
    assert err.startswith("Error:") and err.count("\n") == 1 and message in err, err
    assert listing(tmp_path) == before


def test_empty_dicom_folder(tmp_path, capsys):
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("no slices here")
    code, _, err = run_cli([folder, "-o", tmp_path / "seg.nii.gz", "--model", "fixture-3mm"], capsys)
    assert code != 0 and err.count("\n") == 1 and "no DICOM image slices" in err
    assert listing(tmp_path) == ["dicom", "dicom/notes.txt"]


def test_refuses_to_overwrite_the_input(write_ct, tmp_path, capsys):
    ct = small_ct(write_ct)
    original = ct.read_bytes()
    code, _, err = run_cli([ct, "-o", ct, "--model", "fixture-3mm"], capsys)
    assert code == 2 and "would overwrite the input" in err and err.count("\n") == 1
    # masks of a case named `seg` go to seg/<class>.nii.gz: here that is where the input lives
    (tmp_path / "seg").mkdir()
    inside = small_ct(write_ct, "seg/spleen.nii.gz")
    code, _, err = run_cli([inside, "-o", tmp_path / "seg.nii.gz", "--masks", "--model", "fixture-3mm"], capsys)
    assert code == 2 and "would overwrite the input" in err
    assert ct.read_bytes() == original and listing(tmp_path) == ["ct.nii.gz", "seg", "seg/spleen.nii.gz"]


def test_batch_reports_and_skips_a_failing_case(write_ct, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    small_ct(write_ct, "cases/good.nii.gz")
    (cases / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    out = tmp_path / "out"
    code, stdout, err = run_cli([cases, "-o", out, "--model", "fixture-3mm", "--tile-step", "0.5"], capsys)
    assert code == 1
    assert "broken: FAILED" in err and "1 of 2 cases failed" in err
    assert "good:" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.nii.gz", "segment_summary.json"]
    summary = json.loads((out / "segment_summary.json").read_text())
    assert (summary["total"], summary["ok"], summary["failed"]) == (2, 1, 1)
    assert {c["case"]: c["status"] for c in summary["cases"]} == {"broken": "failed", "good": "ok"}
    assert nib.load(out / "good.nii.gz").shape == (40, 36, 16)


def test_usage_errors(write_ct, tmp_path, capsys):
    ct = small_ct(write_ct)
    code, _, err = run_cli([ct, "-o", tmp_path / "x.nii.gz", "--model", "fixture-3mm", "--backend", "onnxruntime"],
                           capsys)
    assert code == 2 and "needs --artifacts" in err
    code, _, err = run_cli([ct, "-o", tmp_path / "x.nii.gz", "--model", "no-such-model"], capsys)
    assert code == 1 and "model not found" in err
    assert listing(tmp_path) == ["ct.nii.gz"]


@pytest.mark.slow
def test_onnxruntime_artifact_and_decomposed_torch_agree_with_torch(write_ct, tmp_path, capsys):
    from tuckertrt.parity.export import export_model
    from tuckertrt.models import load_model

    ct = small_ct(write_ct)
    export_model(load_model("fixture-3mm"), tmp_path / "export", fp16=False, verify=False)
    runs = {"torch": ["--backend", "torch"],
            "onnxruntime": ["--backend", "onnxruntime", "--artifacts", tmp_path / "export"],
            "df0.5": ["--df", "0.5", "--backend", "torch"]}
    labels = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.nii.gz"
        code, _, err = run_cli([ct, "-o", out, "--model", "fixture-3mm", *extra], capsys)
        assert code == 0, err
        labels[name] = np.asarray(nib.load(out).dataobj)
    assert (labels["onnxruntime"] == labels["torch"]).mean() > 0.999
    print(f"DF 0.5 vs original label agreement: {(labels['df0.5'] == labels['torch']).mean():.4f}")
    assert sorted(json.loads((tmp_path / "df0.5.json").read_text())["runners"][0]) \
        == ["backend", "decomposition_df", "device", "model", "precision", "threads", "torch"]
