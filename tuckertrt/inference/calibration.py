"""Reproducible calibration data: a small JSON case list (CT volumes + seed) → normalised CT patches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tuckertrt.data import example_ct
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import read_json
from tuckertrt.models.spec import ModelSpec
from tuckertrt.inference.patches import ct_patch, fit_to_patch


@dataclass
class CalibrationSet:
    """``patches_per_case`` random windows (seeded) of each case's normalised CT volume."""

    cases: list[Path]
    seed: int = 0
    patches_per_case: int = 2

    def patches(self, spec: ModelSpec, patch: tuple[int, ...] | None = None) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        size = tuple(patch or spec.patch_size)
        for path in self.cases:
            volume = _volume(path, spec)
            for _ in range(self.patches_per_case):
                start = [int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(volume.shape, size)]
                window = volume[tuple(slice(b, b + p) for b, p in zip(start, size))]
                yield fit_to_patch(window, size)[None, None]

    def describe(self) -> dict[str, Any]:
        return {"cases": [str(p) for p in self.cases], "seed": self.seed, "patches_per_case": self.patches_per_case}


def _volume(path: Path, spec: ModelSpec) -> np.ndarray:
    """The whole normalised volume in the network's axis order."""
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as e:  # nibabel raises several types for a file that is not NIfTI
        raise TuckerTRTError(f"cannot read calibration case {path}: {e}") from None
    shape = tuple(shape[::-1]) if spec.reader_axes == "zyx" else tuple(shape)
    shape = tuple(shape[i] for i in spec.transpose_forward)
    return ct_patch(spec, patch=shape, ct_path=path)[0, 0]


def load_calibration(path: str | Path) -> CalibrationSet:
    """Read a case list ``{"seed": 0, "patches_per_case": 2, "cases": ["ct.nii.gz", ...]}``; relative case paths
    are resolved against the list's folder, then against the package's bundled examples (``example_ct.nii.gz``)."""
    path = Path(path)
    raw = read_json(path, "calibration case list")
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list) or not raw["cases"]:
        raise TuckerTRTError(f"{path}: a calibration case list needs a non-empty \"cases\" list")
    roots = [path.parent, example_ct().parent]
    cases = []
    for case in raw["cases"]:
        found = next((r / case for r in roots if (r / case).is_file()), None)
        if found is None:
            raise TuckerTRTError(f"{path}: calibration case {case} not found (looked in {', '.join(map(str, roots))})")
        cases.append(found)
    seed, per_case = raw.get("seed", 0), raw.get("patches_per_case", 2)
    if not isinstance(seed, int) or not isinstance(per_case, int) or per_case < 1:
        raise TuckerTRTError(f"{path}: seed and patches_per_case must be integers (patches_per_case >= 1)")
    return CalibrationSet(cases, seed, per_case)
