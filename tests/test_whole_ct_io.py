"""NIfTI reading streamed into int16 and label writing through (ISA-L) gzip: same voxels as nibabel, standard files."""
from __future__ import annotations

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest

from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference.io import CTImage, read_nifti, write_label_nifti


def ct_volume(shape=(40, 30, 20)) -> np.ndarray:
    return np.random.default_rng(0).integers(-1024, 3000, shape).astype(np.int16)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_int16_ct_is_read_as_int16_exactly(tmp_path, suffix):
    ct = ct_volume()
    path = tmp_path / f"ct{suffix}"
    nib.save(nib.Nifti1Image(ct, np.diag([0.8, 0.8, 1.0, 1.0])), path)
    image = read_nifti(path)
    assert image.array.dtype == np.int16 and np.array_equal(image.array, ct)


def test_scaled_and_big_endian_voxels_are_in_hu(tmp_path):
    stored = (ct_volume() + 1024).astype(np.uint16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(1, -1024)
    nib.save(img, tmp_path / "scaled.nii.gz")
    scaled = read_nifti(tmp_path / "scaled.nii.gz").array
    assert scaled.dtype == np.int16 and np.array_equal(scaled, ct_volume())

    fractional = nib.Nifti1Image(stored, np.eye(4))
    fractional.header.set_slope_inter(0.5, -1024)
    nib.save(fractional, tmp_path / "fractional.nii.gz")
    expected = nib.load(tmp_path / "fractional.nii.gz").get_fdata()
    got = read_nifti(tmp_path / "fractional.nii.gz").array
    assert got.dtype == np.float32 and np.allclose(got, expected)

    big = nib.Nifti1Image(ct_volume().astype(">i2"), np.eye(4))
    big.set_data_dtype(np.dtype(">i2"))
    nib.save(big, tmp_path / "big.nii.gz")
    assert np.array_equal(read_nifti(tmp_path / "big.nii.gz").array, ct_volume())


def test_truncated_gzip_is_one_clear_error(tmp_path):
    nib.save(nib.Nifti1Image(ct_volume(), np.eye(4)), tmp_path / "ct.nii.gz")
    raw = gzip.decompress((tmp_path / "ct.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(TuckerTRTError, match="cut.nii.gz"):
        read_nifti(tmp_path / "cut.nii.gz")


@pytest.mark.parametrize("stdlib_gzip", [False, True])
def test_labels_are_standard_gzip_nifti(tmp_path, monkeypatch, stdlib_gzip):
    if stdlib_gzip:
        monkeypatch.setitem(sys.modules, "isal", None)  # the fallback when the fast-io extra is absent
    labels = np.zeros((40, 30, 20), np.uint8, order="F")
    labels[5:30, 4:20, 2:15] = 7
    like = CTImage(np.empty((0, 0, 0), np.int16), np.diag([0.8, 0.8, 1.0, 1.0]), tmp_path / "ct.nii.gz")
    dest = write_label_nifti(tmp_path / "seg.nii.gz", labels, like, {7: "liver"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]
    img = nib.load(dest)
    assert np.array_equal(np.asanyarray(img.dataobj), labels) and np.allclose(img.affine, like.affine)
    assert b"liver" in img.header.extensions[0].get_content()
    raw = gzip.decompress(dest.read_bytes())  # the standard library reads it: plain gzip
    assert np.array_equal(np.frombuffer(raw[-labels.size:], np.uint8).reshape(labels.shape, order="F"), labels)
