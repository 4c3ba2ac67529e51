"""Segmentation agreement: per-class Dice and normalised surface distance (NSD), label agreement, TS groups.

Conventions (TotalSegmentator's tests): classes are scored only where present in the reference; a class
predicted but absent from the reference is ignored. NSD at tolerance ``tau`` mm is the fraction of both
surfaces (voxels removed by one binary erosion) lying within ``tau`` of the other surface, with distances
from ``distance_transform_edt`` at the voxel spacing, computed inside each class's padded bounding box.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from tuckertrt.errors import TuckerTRTError

# TotalSegmentator `total` id ranges (inclusive) of its five part models.
TS_GROUPS: dict[str, tuple[int, int]] = {
    "organs": (1, 24), "vertebrae": (25, 50), "cardiac": (51, 68), "muscles": (69, 91), "ribs": (92, 117),
}
DEFAULT_TOLERANCE_MM = 2.0


@dataclass
class ClassScore:
    label: int
    name: str
    group: str
    dice: float
    nsd: float
    reference_voxels: int
    predicted_voxels: int


@dataclass
class SegmentationAgreement:
    """Per-class scores, group and overall means, and voxel label agreement of a prediction vs a reference."""

    classes: list[ClassScore]
    tolerance_mm: float
    voxel_agreement: float  # fraction of all voxels with the same label
    foreground_agreement: float  # the same over reference-foreground voxels
    groups: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        return _mean([c.dice for c in self.classes])

    @property
    def mean_nsd(self) -> float:
        return _mean([c.nsd for c in self.classes])

    def to_json(self) -> dict[str, Any]:
        return {"mean_dice": self.mean_dice, "mean_nsd": self.mean_nsd, "tolerance_mm": self.tolerance_mm,
                "n_classes": len(self.classes), "voxel_agreement": self.voxel_agreement,
                "foreground_agreement": self.foreground_agreement, "groups": self.groups,
                "classes": [asdict(c) for c in self.classes]}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def group_of(label: int, ts_ids: bool) -> str:
    if ts_ids:
        for name, (lo, hi) in TS_GROUPS.items():
            if lo <= label <= hi:
                return name
    return "all"


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(reference.sum()) + int(prediction.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(reference, prediction).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its binary erosion (full 3D connectivity)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def normalized_surface_distance(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float],
                                tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> float:
    """Fraction of both boundaries within ``tolerance_mm`` of the other boundary (0 if one mask is empty)."""
    if not reference.any() and not prediction.any():
        return 1.0
    if not reference.any() or not prediction.any():
        return 0.0
    box = _bounding_box(reference | prediction, margin=int(np.ceil(tolerance_mm / min(spacing))) + 2)
    ref_surface, pred_surface = surface(reference[box]), surface(prediction[box])
    dist_to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    dist_to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    within = (dist_to_ref[pred_surface] <= tolerance_mm).sum() + (dist_to_pred[ref_surface] <= tolerance_mm).sum()
    return float(within) / float(ref_surface.sum() + pred_surface.sum())


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    coords = np.nonzero(mask)
    return tuple(slice(max(0, int(c.min()) - margin), min(n, int(c.max()) + margin + 1))
                 for c, n in zip(coords, mask.shape))


def compare_labels(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   class_names: dict[int, str] | None = None, tolerance_mm: float = DEFAULT_TOLERANCE_MM,
                   ts_ids: bool | None = None) -> SegmentationAgreement:
    """Score ``prediction`` against ``reference`` (integer label maps on the same grid).

    ``ts_ids``: group classes by TotalSegmentator id ranges; by default when every class name is a TS name
    (grouped by that name's TS id, so relabelled TS subsets group too) or, without names, every label is ≤ 117."""
    if reference.shape != prediction.shape:
        raise TuckerTRTError(f"label maps differ in shape: reference {reference.shape}, "
                             f"prediction {prediction.shape}")
    if len(spacing) != reference.ndim:
        raise TuckerTRTError(f"spacing {tuple(spacing)} does not match a {reference.ndim}D label map")
    present = [int(v) for v in np.unique(reference) if v != 0]
    ts_map = _ts_id_map(present, class_names) if ts_ids is not False else None
    names = class_names or {}
    scores = []
    for label in present:
        ref = reference == label
        box = _bounding_box(ref | (prediction == label), margin=int(np.ceil(tolerance_mm / min(spacing))) + 2)
        ref_box, pred_box = ref[box], prediction[box] == label
        scores.append(ClassScore(label, names.get(label, str(label)), group_of(ts_map[label], True) if ts_map else "all",
                                 dice(ref_box, pred_box),
                                 normalized_surface_distance(ref_box, pred_box, spacing, tolerance_mm),
                                 int(ref_box.sum()), int(pred_box.sum())))
    foreground = reference != 0
    same = reference == prediction
    result = SegmentationAgreement(scores, tolerance_mm, float(same.mean()),
                                   float(same[foreground].mean()) if foreground.any() else 1.0)
    for group in dict.fromkeys(s.group for s in scores):
        members = [s for s in scores if s.group == group]
        result.groups[group] = {"dice": _mean([s.dice for s in members]), "nsd": _mean([s.nsd for s in members]),
                                "n_classes": len(members)}
    return result


def _ts_id_map(present: list[int], class_names: dict[int, str] | None) -> dict[int, int] | None:
    """The TotalSegmentator id of each present label (by class name when names are given), or None when the
    labels are not TotalSegmentator classes."""
    from tuckertrt.models.presets import ts_total_classes

    ts = ts_total_classes()
    if class_names:
        by_name = {name: i for i, name in ts.items()}
        ids = {label: by_name.get(class_names.get(label, "")) for label in present}
        return ids if all(v is not None for v in ids.values()) else None
    return {label: label for label in present} if all(label <= max(ts) for label in present) else None


def relabel_by_name(labels: np.ndarray, names: dict[int, str], target: dict[int, str]) -> np.ndarray:
    """Map a label map from one label set to another by class name (names missing in ``target`` → 0)."""
    ids = {name: i for i, name in target.items()}
    lookup = np.zeros(int(max(names, default=0)) + 1, dtype=np.int64)
    for label, name in names.items():
        lookup[label] = ids.get(name, 0)
    if labels.size and int(labels.max()) >= len(lookup):
        raise TuckerTRTError(f"label {int(labels.max())} has no name")
    return lookup[labels]
