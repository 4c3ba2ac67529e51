"""Data shipped with the package, found with :mod:`importlib.resources` (so it works from a wheel as from a
checkout): TotalSegmentator class names, the example CT (with TS's own labels of it, the default input of parity
checks, calibration and ``tuckertrt build``), the trained ``fixture-3mm`` model and the INT8 calibration lists."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from tuckertrt.errors import TuckerTRTError

# Model names -> their folder under tuckertrt/data (each holds one nnU-Net results folder).
BUNDLED_MODELS = {"fixture-3mm": "fixture_3mm"}
DEFAULT_CALIBRATION = "ts_example"


def _bundled(relative: str) -> Path:
    """A file or folder of the installed package (wheels install unzipped, so it is a real path)."""
    return Path(str(resources.files("tuckertrt.data").joinpath(relative)))


def example_ct() -> Path:
    """The real CT of TotalSegmentator's tests (122×101×112 voxels at 3 mm)."""
    return _bundled("examples/example_ct.nii.gz")


def example_reference() -> Path:
    """TotalSegmentator's own labels of :func:`example_ct` (total --fast, force split)."""
    return _bundled("examples/example_seg_fast_force_split.nii.gz")


def bundled_model_folder(name: str) -> Path:
    """The nnU-Net results folder of the bundled model ``name`` (a key of :data:`BUNDLED_MODELS`)."""
    folder = _bundled(BUNDLED_MODELS[name])
    results = sorted(folder.glob("*/*__3d_fullres")) if folder.is_dir() else []
    if not results:
        raise TuckerTRTError(f"bundled model {name} not found under {folder} (a broken installation?)")
    return results[0]


def calibration_list(name: str = DEFAULT_CALIBRATION) -> Path:
    """The bundled INT8 calibration case list ``name`` (``calibration/<name>.json`` in the package)."""
    path = _bundled(f"calibration/{name}.json")
    if not path.is_file():
        raise TuckerTRTError(f"bundled calibration list {name} not found at {path} (a broken installation?)")
    return path


def example_dicom() -> Path:
    """A DICOM CT series of another patient than :func:`example_ct` (20 slices of 512×512, 0.977 mm, 2 mm steps,
    JPEG 2000; from TotalSegmentator's tests): the held-out case of the default build's parity check."""
    return _bundled("examples/example_ct_dicom")
