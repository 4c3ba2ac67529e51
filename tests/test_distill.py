"""Distillation from the uncompressed model on unlabelled CTs: API, hold-out, teacher cache, layer-wise init,
bad input."""
from __future__ import annotations

import json

import nibabel as nib
import pytest


from tests.test_training import _options, synthetic_case, tiny_model
from tuckertrt.cli import main
from tuckertrt.decomposition import decompose
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.checkpoint import save_results_folder
from tuckertrt.training import distill
from tuckertrt.training.data import load_unlabelled


@pytest.fixture
def ct_file(tmp_path):
    ct, _, affine = synthetic_case()
    path = tmp_path / "cts" / "scan.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(ct, affine), path)
    return path


def test_distill_reports_on_the_held_out_z_range(tmp_path, ct_file):
    teacher = tiny_model()  # random weights: its segmentation is arbitrary but not constant
    student = decompose(teacher, df=0.25, min_rank=2)
    best, report = distill(teacher, student, [ct_file], tmp_path / "out", options=_options(4, batch_size=2))
    json.dumps(report)  # JSON-able as it is
    assert report["mode"] == "distill" and report["compression_ratio"] > 1
    assert report["train_volumes"] == ["scan[train 0:33]"] and report["validation_volumes"] == ["scan[val 33:44]"]
    assert report["original"]["mean_dice"] == 1.0 and report["original"]["voxel_agreement"] == 1.0
    assert report["best_iteration"] in [h["iteration"] for h in report["history"]]
    assert report["per_class_dice"]["recovered"] and report["seconds_per_iteration"] > 0
    assert best.is_decomposed and best.decomposition["ranks"] == student.decomposition["ranks"]
    assert [e["stage"] for e in report["evaluations"]] == ["original", "zero-shot", "distilled"]


def test_recovery_improves_held_out_agreement_of_a_trained_model(tmp_path):
    """Data-aware initialisation and distillation on slices 0–84 of the example CT raise the fixture's DF 0.5
    mean Dice against its original on slices 84–112, which recovery never saw, at least twofold (measured: 0.010
    zero-shot, 0.033 recovered)."""
    from tuckertrt.data import example_ct
    from tuckertrt.models import load_model
    from tuckertrt.training import RecoveryOptions, TrainConfig

    teacher = load_model("fixture-3mm")
    options = RecoveryOptions(config=TrainConfig(iterations=2, batch_size=1, lr=5e-4, weight_decay=0.0,
                                                 checkpoint_every=1), patch=(32, 32, 32), progress=False)
    _, report = distill(teacher, decompose(teacher, df=0.5), [example_ct()], tmp_path / "out", options=options)
    assert report["validation_volumes"] == ["example_ct[val 84:112]"]
    zero, recovered = report["zero_shot"]["mean_dice"], report["recovered"]["mean_dice"]
    assert recovered >= 2 * zero and recovered >= zero + 0.015, (zero, recovered)


def test_online_teacher_data_aware_init_and_pseudo_labels(tmp_path, ct_file):
    teacher = tiny_model()
    options = _options(2)
    options.cache_limit_bytes, options.init, options.pseudo_label_weight = 0, "data", 1.0
    options.config.amp = True  # bfloat16 autocast in the student's and the teacher's forward passes
    _, report = distill(teacher, decompose(teacher, df=0.5), [ct_file.parent], tmp_path / "out", options=options)
    assert report["iterations"] == 2 and report["history"][-1]["train"]["agree"] > 0
    assert "pseudo" in report["history"][-1]["train"]
    before = json.loads((tmp_path / "out" / "zero_shot.json").read_text())
    assert report["zero_shot"]["voxel_agreement"] == before["voxel_agreement"]
    assert report["data_aware_init"]["voxel_agreement"] == report["history"][0]["voxel_agreement"]


def test_teacher_and_student_must_be_the_same_model(tmp_path, ct_file):
    other = tiny_model()
    other.spec = type(other.spec)(**{**other.spec.__dict__, "labels": {0: "background", 1: "liver", 2: "x",
                                                                        3: "y", 4: "z"}})
    with pytest.raises(TuckerTRTError, match="different models"):
        distill(tiny_model(), decompose(other, df=0.5), [ct_file], tmp_path / "out", options=_options(1))
    teacher = tiny_model()
    with pytest.raises(TuckerTRTError, match="itself compressed"):
        distill(decompose(teacher, df=0.5), decompose(teacher, df=0.5), [ct_file], tmp_path / "out",
                options=_options(1))
    assert not (tmp_path / "out").exists()


def test_unreadable_inputs_are_skipped_and_none_readable_is_an_error(tmp_path, ct_file):
    (ct_file.parent / "broken.nii.gz").write_bytes(b"not a nifti")
    volumes, skipped = load_unlabelled([ct_file.parent], tiny_model().spec)
    assert [v.name for v in volumes] == ["scan"] and "broken" in next(iter(skipped))
    ct_file.unlink()
    with pytest.raises(TuckerTRTError, match="no readable CT"):
        load_unlabelled([ct_file.parent], tiny_model().spec)


def test_distill_cli_errors_are_one_line(tmp_path, ct_file, capsys):
    folder = save_results_folder(tiny_model(), tmp_path / "D" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    cases = [
        (["--distill", str(tmp_path / "missing.nii.gz")], "input not found"),
        ([str(ct_file)], "add --distill"),
        (["--distill", str(ct_file), "--iterations", "-3"], "--iterations must be positive"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            main(["finetune", str(folder), "--df", "0.5", *args, "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["finetune", str(folder), "--df", "0.5", "--distill", str(ct_file.parent),
              "-o", str(ct_file.parent / "out")])
    assert "lies inside that input folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (ct_file.parent / "out").exists()


def test_compressed_model_needs_a_teacher(tmp_path, ct_file, capsys):
    from tuckertrt.decomposition.serialize import save_decomposed

    saved = save_decomposed(decompose(tiny_model(), df=0.5), tmp_path / "student.pt")
    with pytest.raises(SystemExit):
        main(["finetune", str(saved), "--distill", str(ct_file), "-o", str(tmp_path / "out")])
    assert "--teacher" in capsys.readouterr().err


def test_ct_inputs_are_files_dicom_folders_or_folders_of_them(tmp_path, ct_file):
    from tuckertrt.training.data import find_cts

    series = tmp_path / "cts" / "series1"
    series.mkdir()
    for i in range(3):
        (series / f"IM{i}").write_bytes(b"x")
    assert find_cts([ct_file.parent]) == [ct_file, series]
    assert find_cts([series, ct_file]) == [series, ct_file]
