"""Per-class volume and mean intensity, as ``TotalSegmentator --statistics`` writes them to statistics.json.

TotalSegmentator's statistics.json maps every class of the task (restricted to ``--roi_subset``) to
``{"volume": mm³, "intensity": mean HU}``: the volume is voxel count × voxel volume (unrounded), the intensity
the mean of the CT (truncated to integer HU, as TS reads it) inside the mask rounded to 5 decimals; absent
classes get 0.0 for both, and so do classes whose mask comes within 3 voxels of the image border (an organ cut
off by the field of view), unless incomplete masks are included."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from tuckertrt.fileio import write_json_atomic
from tuckertrt.inference.io import CTImage

BORDER_VOXELS = 3  # TotalSegmentator leaves out masks within this many voxels of any image face
INTENSITY_DECIMALS = 5
STATISTICS_FILE = "statistics.json"
SLAB = 32  # slices per pass when summing intensities, to bound memory


@dataclass(frozen=True)
class ClassStatistics:
    """One class: volume in mm³ and mean intensity in HU (both 0.0 when absent or left out at the border)."""

    volume: float
    intensity: float
    voxels: int
    at_border: bool

    def as_ts(self) -> dict[str, float]:
        return {"volume": self.volume, "intensity": self.intensity}


def voxel_volume(affine: np.ndarray) -> float:
    """mm³ of one voxel: the absolute determinant of the affine's 3×3 part."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def basic_statistics(labels: np.ndarray, image: CTImage, class_names: dict[int, str],
                     include_incomplete: bool = False) -> dict[str, ClassStatistics]:
    """``{class name: ClassStatistics}`` for every class in ``class_names`` (in id order), from ``labels`` in
    ``image``'s voxel grid. One pass over the volume (in slabs), whatever the number of classes."""
    if labels.shape != image.array.shape:
        raise ValueError(f"labels {labels.shape} and image {image.array.shape} differ in shape")
    size = max(max(class_names, default=0), int(labels.max(initial=0))) + 1
    counts, sums = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.float64)
    for z in range(0, labels.shape[2], SLAB):
        slab = labels[:, :, z:z + SLAB].ravel()
        counts += np.bincount(slab, minlength=size)
        sums += np.bincount(slab, weights=np.trunc(image.array[:, :, z:z + SLAB]).ravel(), minlength=size)
    boxes = ndimage.find_objects(labels, max_label=size - 1)
    per_voxel = voxel_volume(image.affine)
    stats = {}
    for label, name in sorted(class_names.items()):
        voxels, box = int(counts[label]), boxes[label - 1] if label else None
        at_border = box is not None and any(s.start < BORDER_VOXELS or s.stop > n - BORDER_VOXELS
                                            for s, n in zip(box, labels.shape))
        if not voxels or (at_border and not include_incomplete):
            stats[name] = ClassStatistics(0.0, 0.0, voxels, at_border)
        else:
            intensity = round(float(sums[label] / voxels), INTENSITY_DECIMALS)
            stats[name] = ClassStatistics(voxels * per_voxel, intensity, voxels, at_border)
    return stats


def statistics_json(stats: dict[str, ClassStatistics]) -> dict[str, dict[str, float]]:
    """The statistics.json content: ``{name: {"volume": ..., "intensity": ...}}``."""
    return {name: s.as_ts() for name, s in stats.items()}


def write_statistics(dest: str | os.PathLike, stats: dict[str, ClassStatistics]) -> Path:
    """Write statistics.json atomically to ``dest``."""
    return write_json_atomic(dest, statistics_json(stats))
