"""A clinical-size CT for benchmarks: a CT stretched (linear interpolation) onto a larger voxel grid.

    python -m tuckertrt.bench.scaled_ct DEST.nii.gz [--shape 512 512 900] [--spacing 0.8 0.8 1.0] [--source CT]

The default makes the bundled example CT a 512×512×900 scan at 0.8×0.8×1.0 mm (int16, 0.47 GB in memory):
the same anatomy, stretched, so that every stage of whole-CT segmentation runs at a real scan's size. The
volume is generated slab by slab straight into its int16 array (no float copy of the whole volume).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference.io import save_nifti
from tuckertrt.inference.resample import resample

LARGE_SHAPE = (512, 512, 900)
LARGE_SPACING = (0.8, 0.8, 1.0)


def make_scaled_ct(dest: str | Path, shape: Sequence[int] = LARGE_SHAPE, spacing: Sequence[float] = LARGE_SPACING,
                   source: str | Path | None = None) -> Path:
    """Write ``source`` (default: the example CT) resampled onto ``shape`` (x, y, z) voxels of ``spacing`` mm
    as an int16 NIfTI at ``dest``, centred where the source was; returns ``dest``."""
    import nibabel as nib

    from tuckertrt.data import example_ct

    dest = Path(dest)
    if not dest.name.endswith((".nii", ".nii.gz")):
        raise TuckerTRTError(f"{dest} must be a .nii or .nii.gz file")
    src = nib.as_closest_canonical(nib.load(str(source or example_ct())))
    data = np.asanyarray(src.dataobj)
    volume = np.empty(tuple(shape), dtype=np.int16, order="F")
    resample(data.T, volume.T.shape, order=1, out=volume.T)  # (z, y, x) views: slabs are whole z-planes
    affine = np.diag([*map(float, spacing), 1.0])
    centre = src.affine @ np.array([*((np.array(data.shape) - 1) / 2), 1.0])
    affine[:3, 3] = centre[:3] - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    img = nib.Nifti1Image(volume, affine)
    img.set_data_dtype(np.int16)
    return save_nifti(img, dest)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--shape", type=int, nargs=3, default=LARGE_SHAPE)
    ap.add_argument("--spacing", type=float, nargs=3, default=LARGE_SPACING)
    ap.add_argument("--source", type=Path, default=None)
    args = ap.parse_args(argv)
    print(make_scaled_ct(args.dest, args.shape, args.spacing, args.source))


if __name__ == "__main__":
    main()
