"""Read CT volumes (NIfTI file or DICOM series folder) and write label maps, with one-line errors."""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import atomic_path
from tuckertrt.inference.label_header import label_table_extension

NIFTI_SUFFIXES = (".nii.gz", ".nii")
GZIP_LEVEL = 1
READ_CHUNK = 16 << 20
# A CT in Hounsfield units holds air (-1000) somewhere and stays within the 16-bit range scanners store.
CT_MIN_BELOW = -200.0
CT_ABS_LIMIT = 40000.0
# Voxel sizes a CT can have (micro-CT .. thick scout slabs) and the largest volume read at all.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 100.0
MAX_VOXELS = 2**31


@dataclass
class CTImage:
    """A 3D CT as nibabel sees it: ``array`` (x, y, z) in HU (int16 when the file stores integers that fit, else
    float32), voxel-to-world ``affine`` (RAS+ mm)."""

    array: np.ndarray
    affine: np.ndarray
    source: Path
    header: object | None = None  # the nibabel header of a NIfTI input (kept for writing outputs)
    dicom: tuple = ()  # a DICOM input's slice headers (pydicom Datasets without pixel data), in z order

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
    path = _existing_input(path)
    image = read_dicom_series(path) if path.is_dir() else read_nifti(path)
    check_affine(image.affine, path)
    if check_intensities:
        check_ct_intensities(image.array, path)
    return image


def probe_ct(path: str | os.PathLike) -> None:
    """The checks :func:`read_ct` makes that need no voxel data (NIfTI header: dimensions, affine, voxel size),
    so a command refuses a bad CT before it loads a model."""
    path = _existing_input(path)
    if path.is_dir():
        return
    img = _load_nifti_header(path)
    _check_shape(tuple(img.shape), path)
    check_affine(np.asarray(img.affine, dtype=np.float64), path)


def _existing_input(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise TuckerTRTError(f"input not found: {path}")
    if path.is_dir():
        return path
    if not path.is_file():
        raise TuckerTRTError(f"input {path} is not a regular file or folder")
    if not is_nifti(path):
        raise TuckerTRTError(f"{path} is neither a NIfTI file (.nii, .nii.gz) nor a DICOM series folder")
    return path


def _load_nifti_header(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError...)
        raise TuckerTRTError(f"{path} is not a readable NIfTI image ({type(e).__name__}: {_first_line(e)})") \
            from None


def read_nifti(path: Path) -> CTImage:
    img = _load_nifti_header(path)
    _check_shape(tuple(img.shape), path)
    dtype = img.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise TuckerTRTError(f"{path} stores {dtype} voxels; a CT needs real numbers (integers or floats)")
    try:
        array = _as_3d(_hu_voxels(img.dataobj, _stored_voxels(img, path)), path)
    except TuckerTRTError:
        raise
    except Exception as e:  # truncated data, bad compression, dtypes that are no numbers (RGB, complex)
        raise TuckerTRTError(f"{path} has unreadable voxel data ({type(e).__name__}: {_first_line(e)})") from None
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


# DICOM series checks: positions along the slice normal must be distinct and evenly spaced, the way dcm2niix
# and nnU-Net's readers assume; anything else would give a wrong z spacing silently.
SLICE_SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the median gap
DUPLICATE_POSITION_MM = 1e-3
ORIENTATION_TOLERANCE = 1e-4
TILT_TOLERANCE = 1e-3  # sine of the angle between the stacking direction and the slice normal


def read_dicom_series(folder: Path) -> CTImage:
    """One DICOM series → (x=columns, y=rows, z=slices) array in HU and a RAS affine (DICOM is LPS).

    Refused with the reason: several series, several orientations, duplicate positions, uneven spacing (gaps),
    a tilted gantry, slices of different sizes, and slices that cannot be read or decoded (named)."""
    import pydicom

    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as e:
        raise TuckerTRTError(f"cannot list the DICOM folder {folder}: {e.strerror or e}") from None
    slices: list[tuple[Path, object]] = []
    broken: list[str] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except pydicom.errors.InvalidDicomError:
            continue  # not DICOM at all (a README, a thumbnail): not part of the series
        except Exception:  # truncated or malformed DICOM: pydicom raises many types
            broken.append(f.name)
            continue
        if "PixelData" in ds:
            slices.append((f, ds))
    if broken:
        raise TuckerTRTError(f"{folder}: {len(broken)} DICOM file(s) cannot be read: {_names(broken)}")
    if not slices:
        raise TuckerTRTError(f"{folder} holds no DICOM image slices")
    series: dict[str, list[str]] = {}
    for f, ds in slices:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(f.name)
    if len(series) > 1:
        described = ", ".join(f"{uid or '(none)'} ({len(names)} files)" for uid, names in list(series.items())[:3])
        raise TuckerTRTError(f"{folder} holds {len(series)} DICOM series: {described}; put one series per folder")
    missing = [f.name for f, ds in slices if not all(k in ds for k in ("ImagePositionPatient",
                                                                        "ImageOrientationPatient", "PixelSpacing"))]
    if missing:
        raise TuckerTRTError(f"{folder}: slice(s) without ImagePositionPatient/ImageOrientationPatient/PixelSpacing: "
                             f"{_names(missing)}")
    if len(slices) < 2:
        raise TuckerTRTError(f"{folder} holds a single DICOM slice; a 3D CT series needs several")
    geometry = [_slice_geometry(f, ds, folder) for f, ds in slices]
    orientation, pixel_spacing = geometry[0][1], geometry[0][2]
    odd = [f.name for (f, _), g in zip(slices, geometry) if np.abs(g[1] - orientation).max() > ORIENTATION_TOLERANCE]
    if odd:
        raise TuckerTRTError(f"{folder}: slices differ in orientation (ImageOrientationPatient), e.g. {_names(odd)}")
    if any(np.abs(np.subtract(g[2], pixel_spacing)).max() > 1e-4 for g in geometry):
        raise TuckerTRTError(f"{folder}: slices differ in PixelSpacing")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    order = sorted(range(len(slices)), key=lambda i: float(normal @ geometry[i][0]))
    slices = [slices[i] for i in order]
    positions = np.stack([geometry[i][0] for i in order])
    along = positions @ normal
    gaps = np.diff(along)
    for i, gap in enumerate(gaps):
        if gap < DUPLICATE_POSITION_MM:
            raise TuckerTRTError(f"{folder}: duplicate slice position {along[i]:.3f} mm in {slices[i][0].name} and "
                                 f"{slices[i + 1][0].name}")
    step = float(np.median(gaps))
    uneven = np.abs(gaps - step) > SLICE_SPACING_TOLERANCE * step
    if uneven.any():
        i = int(np.argmax(uneven))
        raise TuckerTRTError(f"{folder}: slice spacing is not uniform ({gaps.min():.3f} to {gaps.max():.3f} mm; e.g. "
                             f"{gaps[i]:.3f} mm after {slices[i][0].name}): a gap or missing slice; refused")
    stack = positions[-1] - positions[0]
    tilt = np.linalg.norm(stack - (stack @ normal) * normal) / np.linalg.norm(stack)
    if tilt > TILT_TOLERANCE:
        raise TuckerTRTError(f"{folder}: slice positions do not follow the slice normal (tilted gantry, "
                             f"{np.degrees(np.arcsin(min(tilt, 1.0))):.1f}°); reslice it (e.g. dcm2niix) first")
    planes = []
    for f, ds in slices:
        try:
            slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
            plane = ds.pixel_array
        except Exception as e:  # pydicom raises RuntimeError/NotImplementedError/ValueError for bad pixel data
            raise TuckerTRTError(f"{folder}: cannot decode the pixel data of {f.name}: {_first_line(e)}") from None
        if plane.ndim != 2 or not (math.isfinite(slope) and math.isfinite(intercept)):
            raise TuckerTRTError(f"{folder}: {f.name} is not one grey-scale image with a finite rescale")
        planes.append(plane.astype(np.float32) * slope + intercept)
    if len({p.shape for p in planes}) != 1:
        raise TuckerTRTError(f"DICOM slices in {folder} differ in size")
    array = np.stack([p.T for p in planes], axis=-1)  # (rows, cols) -> (cols, rows), stacked along z
    row_spacing, col_spacing = pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # column index i moves along the row direction
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    for _, ds in slices:
        del ds.PixelData  # decoded above; the headers stay for outputs that reference the series
    return CTImage(array, affine, folder, dicom=tuple(ds for _, ds in slices))


def _slice_geometry(f: Path, ds, folder: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(position, orientation, pixel spacing) of a slice, refusing values that are not a valid geometry."""
    try:
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
    except (TypeError, ValueError) as e:
        raise TuckerTRTError(f"{folder}: {f.name} has unreadable geometry tags ({_first_line(e)})") from None
    ok = (position.shape == (3,) and orientation.shape == (6,) and len(spacing) == 2
          and np.all(np.isfinite(position)) and np.all(np.isfinite(orientation))
          and all(math.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing))
    if ok:
        row, col = orientation[:3], orientation[3:]
        ok = (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
              and abs(row @ col) < 1e-3)
    if not ok:
        raise TuckerTRTError(f"{folder}: {f.name} has an invalid ImagePositionPatient/ImageOrientationPatient/"
                             f"PixelSpacing")
    return position, orientation, spacing


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_shape(shape: tuple[int, ...], path: Path) -> None:
    dims = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
    if len(dims) != 3:
        raise TuckerTRTError(f"{path} is {len(dims)}D with shape {shape}; expected one 3D CT volume")
    if min(dims) < 2:
        raise TuckerTRTError(f"{path} has shape {shape}; expected a 3D volume, not a single slice")
    if math.prod(dims) > MAX_VOXELS:
        raise TuckerTRTError(f"{path} has shape {shape}: more than {MAX_VOXELS:,} voxels, too large for one CT")


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    _check_shape(array.shape, path)
    if array.dtype.fields is not None or not (np.issubdtype(array.dtype, np.integer)
                                              or np.issubdtype(array.dtype, np.floating)
                                              or array.dtype == np.bool_):
        raise TuckerTRTError(f"{path} stores {array.dtype} voxels; expected integer or floating-point intensities")
    return array


def check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)):
        raise TuckerTRTError(f"{path} has a broken affine (NaN or infinite values)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise TuckerTRTError(f"{path} has a singular affine (zero voxel size or collapsed axes)")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        raise TuckerTRTError(f"{path} has voxel sizes {', '.join(f'{s:g}' for s in spacing)} mm; a CT's lie within "
                             f"{MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm")


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
    """Write ``labels`` (x, y, z, in ``like``'s grid) atomically with ``like``'s affine; class names go in the header
    as TotalSegmentator's label table (first extension) and as JSON (second)."""
    import nibabel as nib

    header = like.header.copy() if like.header is not None else None
    img = nib.Nifti1Image(labels, like.affine, header)
    img.set_data_dtype(labels.dtype)
    img.header.set_slope_inter(1, 0)
    img.header["cal_min"], img.header["cal_max"] = 0, int(labels.max(initial=0))
    img.header.extensions.clear()  # an input's own extensions do not describe the labels
    if class_names:
        img.header.extensions.append(label_table_extension(class_names))
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
