"""Parity metrics on hand-made label maps: Dice, NSD (against a brute-force reference), absent classes, groups."""
from __future__ import annotations


import numpy as np
import pytest

from tuckertrt.errors import TuckerTRTError
from tuckertrt.parity.metrics import (compare_labels, dice, normalized_surface_distance, relabel_by_name,
                                      surface)


def cube(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def brute_force_nsd(a: np.ndarray, b: np.ndarray, spacing, tau: float) -> float:
    """NSD from all pairwise distances between the two boundaries (independent of distance transforms)."""
    pa, pb = np.argwhere(surface(a)) * spacing, np.argwhere(surface(b)) * spacing
    d = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
    return ((d.min(1) <= tau).sum() + (d.min(0) <= tau).sum()) / (len(pa) + len(pb))


def test_dice_of_overlapping_cubes():
    a = cube((20, 20, 20), (0, 0, 0), (10, 10, 10))
    b = cube((20, 20, 20), (5, 0, 0), (15, 10, 10))
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


@pytest.mark.parametrize("shift,spacing,tau", [(1, (1.0, 1.0, 1.0), 2.0), (3, (1.0, 1.0, 1.0), 2.0),
                                               (2, (2.0, 1.0, 0.5), 2.0), (4, (1.5, 1.5, 3.0), 3.0)])
def test_nsd_matches_brute_force(shift, spacing, tau):
    a = cube((24, 24, 24), (4, 5, 6), (14, 15, 16))
    b = cube((24, 24, 24), (4 + shift, 5, 6), (14 + shift, 15, 17))
    expected = brute_force_nsd(a, b, np.asarray(spacing), tau)
    assert normalized_surface_distance(a, b, spacing, tau) == pytest.approx(expected)


def test_nsd_known_values():
    a = cube((20, 20, 20), (5, 5, 5), (15, 15, 15))
    assert normalized_surface_distance(a, a, (1, 1, 1), 2.0) == 1.0
    shifted = np.roll(a, 1, axis=0)
    assert normalized_surface_distance(a, shifted, (1, 1, 1), 1.0) == 1.0  # every boundary voxel within 1 mm
    assert normalized_surface_distance(a, shifted, (5.0, 1, 1), 2.0) < 1.0  # now 5 mm apart along x
    assert normalized_surface_distance(a, np.zeros_like(a), (1, 1, 1), 2.0) == 0.0


def test_compare_labels_scores_reference_classes_only_and_groups_by_ts_id():
    ref = np.zeros((30, 30, 30), dtype=np.uint8)
    ref[cube(ref.shape, (0, 0, 0), (10, 10, 10))] = 5  # liver (organs)
    ref[cube(ref.shape, (15, 15, 15), (25, 25, 25))] = 30  # vertebrae_L2
    pred = ref.copy()
    pred[cube(ref.shape, (15, 15, 15), (20, 25, 25))] = 0  # half of L2 missed
    pred[cube(ref.shape, (0, 20, 0), (5, 25, 5))] = 100  # a rib that is not in the reference: ignored
    result = compare_labels(ref, pred, (1.5, 1.5, 1.5))
    scores = {c.label: c for c in result.classes}
    assert sorted(scores) == [5, 30]
    assert scores[5].dice == 1.0 and scores[5].nsd == 1.0
    assert scores[30].dice == pytest.approx(2 * 500 / (1000 + 500))
    assert scores[30].name == "30" and scores[30].group == "vertebrae"
    assert result.groups["organs"]["dice"] == 1.0 and set(result.groups) == {"organs", "vertebrae"}
    assert result.mean_dice == pytest.approx((1.0 + 2 / 3) / 2)
    assert result.foreground_agreement == pytest.approx(1500 / 2000)
    assert result.voxel_agreement == pytest.approx(1 - (500 + 125) / 27000)
    doc = result.to_json()
    assert doc["n_classes"] == 2 and doc["classes"][1]["reference_voxels"] == 1000


def test_non_ts_label_sets_use_one_group():
    ref = np.zeros((10, 10, 10), dtype=np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    result = compare_labels(ref, ref, class_names={1: "tumour"})
    assert set(result.groups) == {"all"} and result.classes[0].name == "tumour"


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(TuckerTRTError, match="differ in shape"):
        compare_labels(np.zeros((3, 3, 3), int), np.zeros((3, 3, 4), int))
    with pytest.raises(TuckerTRTError, match="spacing"):
        compare_labels(np.zeros((3, 3, 3), int), np.zeros((3, 3, 3), int), spacing=(1.0, 1.0))


def test_relabel_by_name():
    labels = np.array([0, 1, 2, 1])
    out = relabel_by_name(labels, {0: "background", 1: "liver", 2: "spleen"}, {1: "spleen", 5: "liver"})
    assert out.tolist() == [0, 5, 1, 5]


def test_scores_the_real_61_class_map(shared_data):
    """(How long this takes is printed by benchmarks/metrics_speed.py.)"""
    import nibabel as nib

    ref = np.asarray(nib.load(shared_data / "example_seg_fast_force_split.nii.gz").dataobj)
    pred = np.roll(ref, 1, axis=2)
    result = compare_labels(ref, pred, (3.0, 3.0, 3.0))
    assert len(result.classes) == 61 and set(result.groups) == {"organs", "vertebrae", "cardiac", "muscles", "ribs"}
    assert 0.3 < result.mean_dice < 1.0 and 0.0 < result.mean_nsd < 1.0  # a 3 mm shift exceeds the 2 mm tolerance
