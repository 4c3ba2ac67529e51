"""Data shipped with the package: TotalSegmentator class names and the example CT (with TS's own labels of it),
the default input of parity checks, calibration and ``tuckertrt build``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_ct() -> Path:
    """The real CT of TotalSegmentator's tests (122×101×112 voxels at 3 mm)."""
    return Path(str(resources.files("tuckertrt.data").joinpath("examples/example_ct.nii.gz")))


def example_reference() -> Path:
    """TotalSegmentator's own labels of :func:`example_ct` (total --fast, force split)."""
    return Path(str(resources.files("tuckertrt.data").joinpath("examples/example_seg_fast_force_split.nii.gz")))
