"""Training: losses, nnU-Net patch sampling, datasets, hold-out splits, the loop's resumption and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.helpers import small_plans
from tuckertrt.cli import main
from tuckertrt.decomposition import decompose
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.checkpoint import save_results_folder
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.plans import architecture, configuration, model_spec
from tuckertrt.models.presets import dataset_json
from tuckertrt.training import RecoveryOptions, TrainConfig, finetune
from tuckertrt.training.data import find_labelled_cases, load_labelled, split_holdout, z_axis
from tuckertrt.training.losses import Objective, distillation_loss, soft_dice_loss
from tuckertrt.training.sampling import PatchSampler, Volume, crop, lower_bounds

CLASSES = 5
SPHERES = [(12, 12, 7, 60), (26, 20, 6, 300), (20, 29, 5, 900), (28, 37, 5, -500)]  # centre (x, z), radius, HU


def tiny_model(seed: int = 0) -> LoadedModel:
    """A 3-stage PlainConvUNet (4/8/16 features, patch 16³, 5 classes): fast enough to train in tests."""
    plans = small_plans(n_stages=3, patch=16, base=4, max_features=16)
    dataset = dataset_json({i: ("background" if i == 0 else f"class_{i}") for i in range(CLASSES)})
    spec = model_spec("tiny", plans, dataset)
    arch = architecture(configuration(plans))
    torch.manual_seed(seed)
    return LoadedModel(spec=spec, network=arch.build(1, CLASSES).eval(), architecture=arch, plans=plans,
                       dataset=dataset, source="test:tiny", trained=False)


def synthetic_case(shift: int = 0, shape=(40, 36, 44)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CT-like volume (air with four spheres of different HU) at 3 mm, its labels and affine."""
    rng = np.random.default_rng(shift)
    ct = -1000.0 + rng.normal(0, 20, shape)
    labels = np.zeros(shape, np.uint8)
    g = np.indices(shape)
    for k, (cx, cz, r, hu) in enumerate(SPHERES, 1):
        m = (g[0] - cx) ** 2 + (g[1] - 18) ** 2 + (g[2] - cz - shift) ** 2 < r * r
        ct[m] = hu + rng.normal(0, 20, int(m.sum()))
        labels[m] = k
    return ct.astype(np.int16), labels, np.diag([3.0, 3.0, 3.0, 1.0])


def make_ts_dataset(root: Path, cases: int = 2, masks: bool = True) -> Path:
    """TotalSegmentator-style folders: ``<case>/ct.nii.gz`` with ``segmentations/`` masks or a multilabel file."""
    for c in range(cases):
        ct, labels, affine = synthetic_case(3 * c)
        case = root / f"case{c}"
        (case / "segmentations").mkdir(parents=True) if masks else case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(ct, affine), case / "ct.nii.gz")
        if masks:
            for k in range(1, CLASSES):
                nib.save(nib.Nifti1Image((labels == k).astype(np.uint8), affine),
                         case / "segmentations" / f"class_{k}.nii.gz")
        else:
            img = nib.Nifti1Image(labels, affine)
            names = json.dumps({str(k): f"class_{k}" for k in range(1, CLASSES)}).encode()
            img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", names))
            nib.save(img, case / "seg.nii.gz")
    return root


def make_nnunet_dataset(root: Path) -> Path:
    ct, labels, affine = synthetic_case()
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(ct, affine), root / "imagesTr" / "c_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / "c.nii.gz")
    (root / "dataset.json").write_text(json.dumps(dataset_json({i: ("background" if i == 0 else f"class_{i}")
                                                                  for i in range(CLASSES)})))
    return root


def test_dice_loss_is_minus_one_for_a_confident_correct_prediction():
    labels = torch.randint(0, 3, (2, 6, 6, 6))
    logits = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float() * 50
    assert float(soft_dice_loss(logits, labels)) == pytest.approx(-1.0, abs=1e-4)


def test_distillation_loss_zero_for_equal_logits_and_scaled_by_t_squared():
    s, t = torch.randn(1, 4, 3, 3, 3), torch.randn(1, 4, 3, 3, 3)
    assert float(distillation_loss(s, s, 3.0)) == pytest.approx(0.0, abs=1e-6)
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / 3, 1), torch.log_softmax(t / 3, 1), log_target=True,
                                    reduction="sum") / 27
    assert float(distillation_loss(s, t, 3.0)) == pytest.approx(9 * float(kl), rel=1e-5)


def test_crop_pads_outside_and_bounds_follow_nnunet():
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    out = crop(a, (-2, 1, 3), (4, 4, 4))
    assert out.shape == (1, 4, 4, 4)
    assert np.all(out[:, :2] == 0) and np.array_equal(out[0, 2:, :, :3], a[0, :2, 1:5, 3:6])
    lbs, ubs = lower_bounds((10, 40, 40), (16, 16, 16))  # smaller than the patch on axis 0: centred
    assert list(lbs) == [-3, 0, 0] and list(ubs) == [-3, 24, 24]


def test_foreground_oversampling_centres_patches_on_labelled_voxels():
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[30:32, 5:7, 20:22] = 3
    volume = Volume("v", np.zeros((1, 40, 40, 40), np.float32), labels, truth=True)
    batch = PatchSampler([volume], (8, 8, 8), 6, oversample_foreground=1.0).sample(np.random.default_rng(0))
    assert all((batch.labels[i] == 3).any() for i in range(6))
    random_batch = PatchSampler([volume], (8, 8, 8), 6, oversample_foreground=0.0).sample(np.random.default_rng(0))
    assert not all((random_batch.labels[i] == 3).any() for i in range(6))


def test_datasets_in_all_layouts_give_the_same_labels(tmp_path):
    spec = tiny_model().spec
    masks = load_labelled(make_ts_dataset(tmp_path / "masks", 1), spec)
    multilabel = load_labelled(make_ts_dataset(tmp_path / "multi", 1, masks=False), spec)
    nnunet = load_labelled(make_nnunet_dataset(tmp_path / "raw"), spec)
    assert masks[0].name == "case0" and nnunet[0].name == "c"
    assert np.array_equal(masks[0].labels, multilabel[0].labels)
    assert np.array_equal(masks[0].labels, nnunet[0].labels)
    assert sorted(np.unique(masks[0].labels)) == list(range(CLASSES))
    assert masks[0].image.shape == (1, 44, 36, 40)  # network order (z, y, x)


def test_dataset_errors(tmp_path):
    with pytest.raises(TuckerTRTError, match="no labelled cases"):
        find_labelled_cases(tmp_path)
    make_ts_dataset(tmp_path / "d", 1)
    for f in (tmp_path / "d" / "case0" / "segmentations").iterdir():
        f.rename(f.with_name("liver.nii.gz") if f.name == "class_1.nii.gz" else f.with_name("x_" + f.name))
    with pytest.raises(TuckerTRTError, match="no class"):
        load_labelled(tmp_path / "d", tiny_model().spec)


def test_single_volume_holdout_is_a_disjoint_z_range():
    volume = Volume("ct", np.random.rand(1, 40, 8, 8).astype(np.float32), np.zeros((40, 8, 8), np.uint8))
    train, val = split_holdout([volume], 0.25, z_axis(tiny_model().spec))
    assert train[0].shape == (30, 8, 8) and val[0].shape == (10, 8, 8)
    assert np.array_equal(np.concatenate([train[0].image, val[0].image], axis=1), volume.image)
    many = [Volume(f"v{i}", volume.image) for i in range(4)]
    assert [v.name for v in split_holdout(many, 0.25, 0)[1]] == ["v3"]
    assert split_holdout([volume], 0, 0) == ([volume], [volume])  # nothing held out: in-sample validation
    with pytest.raises(TuckerTRTError, match=r"in \[0, 1\)"):
        split_holdout([volume], 1.0, 0)


def test_objective_combines_distillation_and_labels():
    from tuckertrt.training.sampling import Batch

    logits = torch.randn(2, 3, 4, 4, 4)
    batch = Batch(torch.zeros(2, 1, 4, 4, 4), torch.randint(0, 3, (2, 4, 4, 4)), logits.clone(),
                  torch.ones(2, 4, 4, 4, dtype=torch.bool), torch.tensor([True, False]), [])
    loss, stats = Objective(temperature=2.0)(logits, batch)
    assert stats["kd"] == pytest.approx(0, abs=1e-6) and stats["agree"] == 1.0
    assert float(loss) == pytest.approx(stats["dice_ce"])
    loss, stats = Objective(temperature=2.0, pseudo_label_weight=0.5)(logits, batch)  # sample 1: teacher labels
    assert float(loss) == pytest.approx(stats["dice_ce"] + 0.5 * stats["pseudo"])


def _options(iterations: int, **kw) -> RecoveryOptions:
    return RecoveryOptions(TrainConfig(iterations=iterations, checkpoint_every=2, lr=1e-3, **kw), progress=False)


def test_poly_schedule_decays_over_the_run():
    config = TrainConfig(iterations=10, lr=1.0, schedule="poly")
    assert config.lr_at(0) == 1.0 and config.lr_at(5) == pytest.approx(0.5 ** 0.9) and config.lr_at(9) > 0
    assert TrainConfig(iterations=10, lr=1.0).lr_at(9) == 1.0
    with pytest.raises(TuckerTRTError, match="unknown lr schedule"):
        TrainConfig(schedule="cosine")


@pytest.mark.parametrize("schedule", ["constant", "poly"])
def test_interrupted_run_resumes_to_the_same_end(tmp_path, schedule):
    data = make_ts_dataset(tmp_path / "data")
    original = tiny_model()
    finetune(original, decompose(original, df=0.5), data, tmp_path / "straight",
             options=_options(4, schedule=schedule))
    with pytest.raises(KeyboardInterrupt):
        finetune(original, decompose(original, df=0.5), data, tmp_path / "cut",
                 options=_options(4, schedule=schedule), interrupt_after=3)
    assert torch.load(tmp_path / "cut" / "state.pt", weights_only=True)["iteration"] == 2  # the last checkpoint
    with pytest.raises(TuckerTRTError, match="--resume"):
        finetune(original, decompose(original, df=0.5), data, tmp_path / "cut", options=_options(4, schedule=schedule))
    _, report = finetune(original, decompose(original, df=0.5), data, tmp_path / "cut",
                         options=_options(4, schedule=schedule), resume=True)
    assert report["resumed_from"] == 2 and report["iterations"] == 4
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    for key, tensor in a["network"].items():
        torch.testing.assert_close(b["network"][key], tensor, rtol=0, atol=1e-6)
    assert [h["validation"]["score"] for h in a["history"]] == pytest.approx(
        [h["validation"]["score"] for h in b["history"]])
    with pytest.raises(TuckerTRTError, match="differs in .*lr"):
        finetune(original, decompose(original, df=0.5), data, tmp_path / "cut",
                 options=RecoveryOptions(TrainConfig(iterations=6, checkpoint_every=2, lr=1e-2, schedule=schedule),
                                         progress=False),
                 resume=True)


@pytest.fixture
def model_folder(tmp_path) -> Path:
    return save_results_folder(tiny_model(), tmp_path / "Dataset998_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres")


@pytest.mark.parametrize("args,message", [
    (["--iterations", "0"], "--iterations must be positive"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["-o", "{data}/out"], "lies inside that input folder"),
    ([], "give --df or --ranks"),
])
def test_finetune_bad_input_is_one_line_and_writes_nothing(tmp_path, model_folder, capsys, args, message):
    data = make_ts_dataset(tmp_path / "data", 1)
    args = [a.format(data=data) for a in args]
    df = [] if message.startswith("give") else ["--df", "0.5"]
    out = ["-o", str(tmp_path / "out")] if "-o" not in args else []
    with pytest.raises(SystemExit) as e:
        main(["finetune", str(model_folder), *df, "--data", str(data), *out, *args])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (data / "out").exists()


def test_finetune_cli_writes_a_loadable_model(tmp_path, model_folder, capsys):
    from tuckertrt.decomposition import load_model

    data = make_ts_dataset(tmp_path / "data")
    main(["finetune", str(model_folder), "--df", "0.5", "--data", str(data), "--iterations", "2",
          "--checkpoint-every", "1", "--lr", "1e-3", "--device", "cpu", "-o", str(tmp_path / "out")])
    assert "mean_dice" in capsys.readouterr().out
    model = load_model(tmp_path / "out" / "model.pt")
    assert model.is_decomposed and model.extra["recovery"]["mode"] == "labels"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [e["stage"] for e in report["evaluations"]] == ["original", "zero-shot", "fine-tuned"]
    assert report["held_out"].startswith("validation on case1")
    assert not list((tmp_path / "out").glob(".*part"))
