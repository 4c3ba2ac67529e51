"""Builders of bad inputs (NIfTI, DICOM series, model folders) and a whole-tree fingerprint, shared by the safety
tests."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from tests.conftest import blob_ct
from tuckertrt.data import bundled_model_folder

FIXTURE_RESULTS = bundled_model_folder("fixture-3mm")
REPO = Path(__file__).resolve().parents[1]


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (hidden ones too): kind and content hash, symlink target or nothing."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                state[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(mode):
                state[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                state[rel] = ("dir" if stat.S_ISDIR(mode) else "other",)
    return state


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return sorted(f"{'+' if k not in before else '-' if k not in after else '~'}{k}"
                  for k in set(before) | set(after) if before.get(k) != after.get(k))


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None, dtype=np.int16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), np.eye(4) * 1.0 if affine is None else affine), path)
    return path


def small_ct(path: Path) -> Path:
    return write_nifti(path, blob_ct((40, 36, 16), (20.0, 18.0, 8.0), 4.0), np.diag([3.0, 3.0, 3.0, 1.0]))


def nifti_with_header(path: Path, **fields) -> Path:
    """A small CT whose header fields are then overwritten (nibabel refuses to build some broken ones)."""
    small_ct(path)
    img = nib.load(path)
    header = img.header.copy()
    for key, value in fields.items():
        header[key] = value
    raw = nib.Nifti1Image(np.asarray(img.dataobj), None, header)
    raw.header.set_qform(None, code=0)
    nib.save(raw, path)
    return path


def dicom_slice(path: Path, z: float, *, series: str = "1.2.826.0.1.3680043.8.498.1", position=None,
                orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), spacing=(2.0, 2.0), size=(16, 16),
                value: int = -1000) -> Path:
    """One uncompressed CT slice (int16, HU = stored value)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series
    ds.ImagePositionPatient = list(position if position is not None else (0.0, 0.0, z))
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    plane = np.full(size, value, dtype=np.int16)
    plane[4:-4, 4:-4] = 40
    ds.PixelData = plane.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_series(folder: Path, zs: Sequence[float] = (0, 2, 4, 6, 8, 10), **kwargs) -> Path:
    for i, z in enumerate(zs):
        dicom_slice(folder / f"slice{i:03d}.dcm", z, **kwargs)
    return folder


def model_copy(dest: Path) -> Path:
    """A copy of the fixture model's results folder, to break or to point outputs at."""
    shutil.copytree(FIXTURE_RESULTS, dest)
    return dest


def run_subprocess(args: Sequence[str], cwd: Path, timeout: float = 300) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TUCKERTRT_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "tuckertrt", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout, proc.stderr
