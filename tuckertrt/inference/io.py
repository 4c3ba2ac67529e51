"""Read CT volumes (NIfTI file or DICOM series folder) and write label maps, with one-line errors."""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
GZIP_LEVEL = 1
READ_CHUNK = 16 << 20
# A CT in Hounsfield units holds air (-1000) somewhere and stays within the 16-bit range scanners store.
CT_MIN_BELOW = -200.0
CT_ABS_LIMIT = 40000.0


@dataclass
class CTImage:
    """A 3D CT as nibabel sees it: ``array`` (x, y, z) in HU (int16 when the file stores integers that fit, else
    float32), voxel-to-world ``affine`` (RAS+ mm)."""

    array: np.ndarray
    affine: np.ndarray
    source: Path
    header: object | None = None  # the nibabel header of a NIfTI input (kept for writing outputs)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def case_name(self) -> str:
        return strip_nifti_suffix(self.source.name)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_ct(path: str | os.PathLike, check_intensities: bool = True) -> CTImage:
    """Read a NIfTI file or a folder holding one DICOM series; validate shape, affine and intensities."""
    path = Path(path)
    if not path.exists():
        raise TuckerTRTError(f"input not found: {path}")
    if path.is_dir():
        image = read_dicom_series(path)
    elif is_nifti(path):
        image = read_nifti(path)
    else:
        raise TuckerTRTError(f"{path} is neither a NIfTI file (.nii, .nii.gz) nor a DICOM series folder")
    check_affine(image.affine, path)
    if check_intensities:
        check_ct_intensities(image.array, path)
    return image


def read_nifti(path: Path) -> CTImage:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        array = _as_3d(_hu_voxels(img.dataobj, _stored_voxels(img, path)), path)
    except TuckerTRTError:
        raise
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError...)
        raise TuckerTRTError(f"{path} is not a readable NIfTI image ({type(e).__name__}: {_first_line(e)})") \
            from None
    return CTImage(array, np.asarray(img.affine, dtype=np.float64), path, img.header)


def _stored_voxels(img: Any, path: Path) -> np.ndarray:
    """The voxels as stored (no scaling). A ``.nii.gz`` is streamed into its array in chunks (nibabel would
    hold a second full-size copy while decompressing); a ``.nii`` is memory-mapped by nibabel."""
    proxy = img.dataobj
    if not path.name.lower().endswith(".gz"):
        return np.asanyarray(proxy.get_unscaled())
    out = np.empty(proxy.shape, dtype=proxy.dtype, order=proxy.order)
    flat = memoryview(out.reshape(-1, order="A")).cast("B")
    with gzip_open(path, "rb") as f:
        if len(f.read(proxy.offset)) != proxy.offset:  # a threaded stream cannot seek: skip the header
            raise TuckerTRTError(f"{path} is truncated before its voxels")
        for start in range(0, len(flat), READ_CHUNK):
            chunk = flat[start:start + READ_CHUNK]
            if f.readinto(chunk) != len(chunk):
                raise TuckerTRTError(f"{path} is truncated: its header promises {out.nbytes} bytes of voxels")
    return out if out.dtype.isnative else out.byteswap(inplace=True).view(out.dtype.newbyteorder("="))


def _hu_voxels(proxy: Any, raw: np.ndarray) -> np.ndarray:
    """The voxels in HU from the ``raw`` stored ones: integers (with an integer slope and intercept, if any) that
    fit int16 as int16 (half of float32; scaled slab by slab, never through float64), anything else float32."""
    slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    ends = [float(raw.min()) * slope + inter, float(raw.max()) * slope + inter] if raw.size else [0.0]
    if raw.dtype.kind not in "iu" or not slope.is_integer() or not inter.is_integer() or min(ends) < -32768 \
            or max(ends) > 32767:
        out = raw.astype(np.float32)  # a copy: a memory-mapped file is never written
        if (slope, inter) != (1.0, 0.0):
            out *= np.float32(slope)
            out += np.float32(inter)
        return out
    if raw.dtype == np.int16 and (slope, inter) == (1.0, 0.0):
        return raw
    out = np.empty(raw.shape, dtype=np.int16, order="F")
    for k in range(raw.shape[-1]):
        out[..., k] = raw[..., k].astype(np.int32) * int(slope) + int(inter)
    return out


def read_dicom_series(folder: Path) -> CTImage:
    """One DICOM series → (x=columns, y=rows, z=slices) array in HU and a RAS affine (DICOM is LPS)."""
    import pydicom

    slices = []
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=False)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError):
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            slices.append(ds)
    if not slices:
        raise TuckerTRTError(f"{folder} holds no DICOM image slices")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise TuckerTRTError(f"{folder} holds {len(series)} DICOM series; put one series per folder")
    if len(slices) < 2:
        raise TuckerTRTError(f"{folder} holds a single DICOM slice; a 3D CT series needs several")
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64))))
    try:
        planes = [ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1.0))
                  + float(getattr(ds, "RescaleIntercept", 0.0)) for ds in slices]
    except Exception as e:  # pydicom raises RuntimeError/NotImplementedError for missing decoders
        raise TuckerTRTError(f"cannot decode the DICOM pixel data in {folder}: {_first_line(e)}") from None
    if len({p.shape for p in planes}) != 1:
        raise TuckerTRTError(f"DICOM slices in {folder} differ in size")
    array = np.stack([p.T for p in planes], axis=-1)  # (rows, cols) -> (cols, rows), stacked along z
    first = np.asarray(slices[0].ImagePositionPatient, dtype=np.float64)
    last = np.asarray(slices[-1].ImagePositionPatient, dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # column index i moves along the row direction
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = (last - first) / (len(slices) - 1)
    lps[:3, 3] = first
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return CTImage(array, affine, folder)


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise TuckerTRTError(f"{path} is {array.ndim}D with shape {tuple(array.shape)}; expected one 3D CT volume")
    if min(array.shape) < 2:
        raise TuckerTRTError(f"{path} has shape {tuple(array.shape)}; expected a 3D volume, not a single slice")
    return array


def check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)):
        raise TuckerTRTError(f"{path} has a broken affine (NaN or infinite values)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise TuckerTRTError(f"{path} has a singular affine (zero voxel size or collapsed axes)")


def check_ct_intensities(array: np.ndarray, path: Path) -> None:
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise TuckerTRTError(f"{path} contains NaN or infinite voxel values")
    low, high = float(array.min()), float(array.max())
    if low > CT_MIN_BELOW or max(abs(low), abs(high)) > CT_ABS_LIMIT:
        raise TuckerTRTError(f"{path} does not look like a CT in Hounsfield units (values {low:g}..{high:g}; "
                             f"expected air near -1000)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def label_dtype(num_labels: int) -> type:
    return np.uint8 if num_labels <= 255 else np.uint16


def write_label_nifti(dest: Path, labels: np.ndarray, like: CTImage, class_names: dict[int, str] | None = None
                      ) -> Path:
    """Write ``labels`` (x, y, z, in ``like``'s grid) atomically with ``like``'s affine, names in a header extension."""
    import nibabel as nib

    header = like.header.copy() if like.header is not None else None
    img = nib.Nifti1Image(labels, like.affine, header)
    img.set_data_dtype(labels.dtype)
    img.header.set_slope_inter(1, 0)
    img.header["cal_min"], img.header["cal_max"] = 0, int(labels.max(initial=0))
    if class_names:
        text = json.dumps({str(k): v for k, v in class_names.items()}).encode()
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", text))
    return save_nifti(img, dest)


def save_nifti(img: object, dest: Path) -> Path:
    """Write a nibabel NIfTI image atomically; ``.nii.gz`` through :func:`gzip_open` at :data:`GZIP_LEVEL`."""
    import nibabel as nib

    with atomic_path(dest) as tmp:
        with (gzip_open(tmp, "wb") if dest.name.lower().endswith(".gz") else open(tmp, "wb")) as f:
            stream = _ForwardStream(f)
            img.to_file_map({"image": nib.FileHolder(fileobj=stream), "header": nib.FileHolder(fileobj=stream)})
    return dest


class _ForwardStream(io.IOBase):
    """A write-only stream that counts what it wrote: nibabel ``tell``s and ``seek``s to where it already is,
    which a (threaded) gzip writer cannot do itself."""

    def __init__(self, raw: Any):
        super().__init__()
        self.raw = raw
        self.position = 0

    def write(self, data: Any) -> int:
        n = self.raw.write(data)
        self.position += memoryview(data).nbytes
        return n

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, pos: int, whence: int = 0) -> int:
        if (whence, pos) not in ((0, self.position), (1, 0)):
            raise io.UnsupportedOperation("a NIfTI stream is written front to back")
        return self.position


def gzip_open(path: Path, mode: str) -> Any:
    """A gzip stream: ISA-L's (``isal``, the ``fast-io`` extra: several times zlib's speed, compressing and
    decompressing in a thread beside the caller) when installed, else the standard library's. Both write
    standard gzip; writing uses the fastest level (labels compress well at any level)."""
    try:
        from isal import igzip_threaded
    except ImportError:
        import gzip

        return gzip.open(path, mode, compresslevel=GZIP_LEVEL)
    return igzip_threaded.open(path, mode, compresslevel=GZIP_LEVEL, threads=1)
