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


def example_dicom() -> Path:
    """A DICOM CT series of another patient than :func:`example_ct` (20 slices of 512×512, 0.977 mm, 2 mm steps,
    JPEG 2000; from TotalSegmentator's tests): the held-out case of the default build's parity check."""
    return Path(str(resources.files("tuckertrt.data").joinpath("examples/example_ct_dicom")))
