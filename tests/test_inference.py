"""Full-CT inference: axis order and spacing round trip, sliding window, Gaussian map, DICOM reading."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob_ct
from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference import Runner, read_ct, segment_volume
from tuckertrt.inference.io import read_dicom_series
from tuckertrt.inference.preprocess import to_network_grid
from tuckertrt.inference.sliding_window import (gaussian_importance_map, sliding_window_argmax, tiles,
                                                window_starts)
from tuckertrt.models.spec import IntensityProperties, ModelSpec

# A "model" that labels bone (> 300 HU after normalisation) lets the whole chain be checked geometrically.
BONE_SPEC = ModelSpec(name="bone", patch_size=(16, 16, 16), spacing=(2.0, 2.0, 2.0), num_classes=2,
                      labels={0: "background", 1: "bone"},
                      intensity=IntensityProperties(mean=0.0, std=100.0, lower=-1000.0, upper=1000.0))


def bone_predictor(patch: np.ndarray) -> np.ndarray:
    bone = (patch[:, :1] - 3.0) * 10.0  # normalised 3.0 == 300 HU
    return np.concatenate([np.zeros_like(bone), bone], axis=1).astype(np.float32)


# RAS, and a permuted/flipped affine (axis i runs posterior, j right, k inferior) with anisotropic voxels.
AFFINES = {
    "RAS": np.diag([1.5, 2.5, 3.0, 1.0]),
    "PRI": np.array([[0.0, 2.5, 0.0, 10.0], [-1.5, 0.0, 0.0, 20.0], [0.0, 0.0, -3.0, 5.0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_blob_lands_in_the_right_place_of_network_and_output_grids(name, write_ct):
    affine = AFFINES[name]
    centre = (20.0, 9.0, 12.0)
    ct = blob_ct((32, 24, 20), centre, radius=5.0)
    path = write_ct(ct, affine)
    assert nib.aff2axcodes(affine) == tuple(name)

    # Network grid: (z, y, x) of the RAS-reoriented volume, resampled to 2 mm.
    grid, geometry = to_network_grid(ct, affine, BONE_SPEC, order=1)
    ras = nib.as_closest_canonical(nib.Nifti1Image(ct, affine))
    ras_index = np.linalg.inv(ras.affine) @ affine @ np.array([*centre, 1.0])
    before = np.array(ras_index[:3][::-1])  # zyx order
    expected = before * (np.array(grid.shape) - 1) / (np.array(geometry.network_shape) - 1)
    found = np.argwhere(grid > 300).mean(axis=0)
    assert np.abs(found - expected).max() < 1.0
    assert geometry.input_spacing == tuple(np.array(ras.header.get_zooms())[::-1])

    # Output: the labels lie in the input's own grid and orientation.
    result = segment_volume(path, Runner(BONE_SPEC, bone_predictor))
    assert result.labels.shape == ct.shape
    truth = ct > 300
    predicted = result.labels == 1
    dice = 2 * (truth & predicted).sum() / (truth.sum() + predicted.sum())
    assert dice > 0.85
    assert np.abs(np.argwhere(predicted).mean(axis=0) - np.array(centre)).max() < 1.0


def test_result_is_written_with_the_input_affine_and_class_names(write_ct, tmp_path):
    affine = AFFINES["PRI"]
    path = write_ct(blob_ct((32, 24, 20), (16.0, 12.0, 10.0), 5.0), affine)
    result = segment_volume(path, Runner(BONE_SPEC, bone_predictor))
    written = result.save(tmp_path / "out" / "seg.nii.gz", masks=True)
    img = nib.load(written[0])
    assert np.allclose(img.affine, affine) and img.shape == (32, 24, 20)
    assert img.get_data_dtype() == np.uint8
    assert b"bone" in img.header.extensions[0].get_content()
    assert (tmp_path / "out" / "seg" / "bone.nii.gz").is_file()
    assert (tmp_path / "out" / "seg.json").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seg", "seg.json", "seg.nii.gz"]


def test_sliding_window_reproduces_a_known_map_through_an_identity_predictor():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 4, size=(5, 2, 6))
    truth = np.kron(blocks, np.ones((8, 5, 8), dtype=int))[:37, :10, :45]  # axis 1 is smaller than the patch

    def one_hot(patch: np.ndarray) -> np.ndarray:
        labels = np.rint(patch[0, 0]).astype(int)
        return (np.eye(4, dtype=np.float32)[labels].transpose(3, 0, 1, 2) * 5.0)[None]

    labels = sliding_window_argmax(truth[None].astype(np.float32), one_hot, (16, 16, 16), 4, tile_step=0.5)
    assert labels.shape == truth.shape
    assert np.array_equal(labels, truth)


def test_window_starts_follow_nnunet():
    assert window_starts(64, 64, 0.5) == [0]
    assert window_starts(100, 64, 0.5) == [0, 18, 36]
    assert window_starts(122, 64, 0.8) == [0, 29, 58]
    with pytest.raises(TuckerTRTError):
        window_starts(10, 16, 0.5)


@pytest.mark.parametrize("shape,step", [((37, 80, 45), 0.8), ((16, 33, 100), 0.5)])
def test_tiles_cover_every_voxel(shape, step):
    covered = np.zeros(shape, dtype=bool)
    for window in tiles(shape, (16, 32, 24), step):
        covered[window] = True
    assert covered.all()


def test_gaussian_importance_map():
    gauss = gaussian_importance_map((16, 20, 24))
    assert gauss.shape == (16, 20, 24) and gauss.dtype == np.float32
    assert gauss[8, 10, 12] == gauss.max() == 1.0
    assert gauss.min() > 0
    assert np.allclose(gauss[1:, :, :], gauss[1:, :, :][::-1, :, :])  # symmetric about the centre voxel
    profile = gauss[8, 10, 12:]
    assert np.all(np.diff(profile) < 0)
    # sigma = patch / 8: one sigma (3 voxels along the 24 axis) from the centre is exp(-1/2).
    assert abs(gauss[8, 10, 15] - np.exp(-0.5)) < 0.02


def test_reads_the_example_dicom_series(shared_data):
    import pydicom

    folder = shared_data / "example_ct_dicom"
    image = read_ct(folder)
    assert image.array.shape == (512, 512, 20)
    assert np.allclose(image.spacing, (0.977, 0.977, 2.0), atol=0.01)
    assert image.array.min() <= -900 and 300 < image.array.max() < 5000
    # Slice k lies at the k-th ImagePositionPatient along the normal (LPS → RAS flips x and y).
    positions = sorted((np.asarray(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, float)
                        for f in folder.iterdir()), key=lambda p: p[2])  # an axial series
    for k in (0, 19):
        world = image.affine @ np.array([0, 0, k, 1.0])
        assert np.allclose(world[:3], positions[k] * np.array([-1, -1, 1]), atol=1e-3)
    assert read_dicom_series(folder).array.dtype == np.float32


def test_part_models_merge_into_ts_ids():
    from tuckertrt.inference import merge_parts

    organs = ModelSpec("p1", (16,) * 3, (1.5,) * 3, 3, {0: "background", 1: "spleen", 2: "liver"})
    ribs = ModelSpec("p5", (16,) * 3, (1.5,) * 3, 2, {0: "background", 1: "rib_left_1"})
    a = np.array([[[0, 1, 2, 2]]])
    b = np.array([[[1, 0, 0, 1]]])
    merged, names = merge_parts([(a, organs), (b, ribs)])
    assert names == {1: "spleen", 5: "liver", 92: "rib_left_1"}
    assert merged.tolist() == [[[92, 1, 5, 92]]]


def test_small_volume_is_padded_to_the_patch(write_ct):
    shape = (12, 10, 8)
    path = write_ct(blob_ct(shape, (6.0, 5.0, 4.0), 2.5), np.diag([2.0, 2.0, 2.0, 1.0]))
    result = segment_volume(path, Runner(BONE_SPEC, bone_predictor))
    assert result.labels.shape == shape and result.tiles == 1
    assert result.labels[6, 5, 4] == 1 and result.labels[0, 0, 0] == 0


def test_part_models_on_their_own_spacings_are_merged_by_ts_name(write_ct):
    """Like total-1.5mm: several models, each preprocessed for its own spacing, merged into TS ids."""
    path = write_ct(blob_ct((32, 24, 20), (16.0, 12.0, 10.0), 5.0), np.diag([1.5, 2.5, 3.0, 1.0]))
    spleen = ModelSpec("part-a", (16, 16, 16), (2.0, 2.0, 2.0), 2, {0: "background", 1: "spleen"},
                       intensity=BONE_SPEC.intensity)
    rib = ModelSpec("part-b", (16, 16, 16), (3.0, 3.0, 3.0), 2, {0: "background", 1: "rib_left_1"},
                    intensity=BONE_SPEC.intensity)

    def body(patch: np.ndarray) -> np.ndarray:  # everything above -500 HU
        inside = (patch[:, :1] + 5.0) * 10.0
        return np.concatenate([np.zeros_like(inside), inside], axis=1).astype(np.float32)

    result = segment_volume(path, [Runner(spleen, body), Runner(rib, bone_predictor)])
    assert result.class_names == {1: "spleen", 92: "rib_left_1"}
    assert result.labels[16, 12, 10] == 92  # the later part wins where both segment
    assert result.labels[4, 4, 4] == 1 and result.labels[0, 0, 0] == 0
