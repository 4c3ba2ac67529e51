"""The example CT bundled with the package (default validation case of ``tuckertrt build``)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def example_ct() -> Path:
    return Path(str(resources.files("tuckertrt.data").joinpath("examples/example_ct.nii.gz")))


def example_reference() -> Path:
    """TotalSegmentator's own labels of :func:`example_ct` (total --fast, force split)."""
    return Path(str(resources.files("tuckertrt.data").joinpath("examples/example_seg_fast_force_split.nii.gz")))
