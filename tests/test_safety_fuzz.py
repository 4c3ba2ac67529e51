"""Fuzzing the readers: NIfTI headers and DICOM tags drawn by hypothesis (over 500 inputs in all). Reading either
succeeds with a sane 3D volume or raises ``TuckerTRTError``; nothing else escapes. A few drawn inputs also go
through the CLI in a subprocess."""
from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.safety_inputs import changes, dicom_slice, run_subprocess, small_ct, tree_state
from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference.io import probe_ct, read_ct

def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True, database=None)

# NIfTI-1 header fields: (byte offset, struct format, strategy for the value)
WILD_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                       st.sampled_from([0.0, -1.0, 1e-9, 1e6, 3.0]))
HEADER_FIELDS = {
    "dim": (40, "8h", st.lists(st.integers(-2, 70), min_size=8, max_size=8)),
    "datatype": (70, "h", st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 2304,
                                           77])),
    "bitpix": (72, "h", st.sampled_from([0, 1, 8, 16, 32, 64, 7])),
    "pixdim": (76, "8f", st.lists(WILD_FLOAT, min_size=8, max_size=8)),
    "vox_offset": (108, "f", st.sampled_from([0.0, 100.0, 352.0, 353.0, 1e9, float("nan")])),
    "scl_slope": (112, "f", WILD_FLOAT),
    "scl_inter": (116, "f", WILD_FLOAT),
    "qform_code": (252, "h", st.integers(-1, 5)),
    "sform_code": (254, "h", st.integers(-1, 5)),
    "quatern": (256, "6f", st.lists(WILD_FLOAT, min_size=6, max_size=6)),
    "srow": (280, "12f", st.lists(WILD_FLOAT, min_size=12, max_size=12)),
    "magic": (344, "4s", st.sampled_from([b"n+1\x00", b"ni1\x00", b"n+2\x00", b"xxxx"])),
    "sizeof_hdr": (0, "i", st.sampled_from([348, 540, 0, -1])),
}


def _base_nifti() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return small_ct(Path(tmp) / "ct.nii").read_bytes()


BASE = _base_nifti()


@st.composite
def nifti_bytes(draw) -> bytes:
    data = bytearray(BASE)
    for name in draw(st.lists(st.sampled_from(sorted(HEADER_FIELDS)), min_size=1, max_size=4, unique=True)):
        offset, fmt, strategy = HEADER_FIELDS[name]
        value = draw(strategy)
        struct.pack_into("<" + fmt, data, offset, *(value if isinstance(value, list) else [value]))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data if cut is None else data[:cut])


def _read_or_refuse(path: Path) -> None:
    for reader in (probe_ct, read_ct):
        try:
            result = reader(path)
        except TuckerTRTError as e:
            assert str(e) and "\n" not in str(e)
            continue
        if result is not None:
            assert result.array.ndim == 3 and np.all(np.isfinite(result.affine))


@fuzz(300)
@given(nifti_bytes())
def test_nifti_headers(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii"
        path.write_bytes(data)
        _read_or_refuse(path)


TAG_VALUES = {
    "ImagePositionPatient": st.one_of(st.lists(WILD_FLOAT, min_size=0, max_size=4), st.none()),
    "ImageOrientationPatient": st.one_of(st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, float("nan")]),
                                                  min_size=5, max_size=7), st.none()),
    "PixelSpacing": st.one_of(st.lists(WILD_FLOAT, min_size=1, max_size=3), st.none()),
    "Rows": st.sampled_from([0, 1, 8, 16, 17, 65535]),
    "Columns": st.sampled_from([0, 1, 8, 16, 17]),
    "BitsAllocated": st.sampled_from([1, 8, 12, 16, 32]),
    "PixelRepresentation": st.sampled_from([0, 1, 2]),
    "SamplesPerPixel": st.sampled_from([1, 3]),
    "RescaleSlope": st.one_of(WILD_FLOAT, st.none()),
    "RescaleIntercept": st.one_of(WILD_FLOAT, st.none()),
    "SeriesInstanceUID": st.sampled_from(["1.2.3", "1.2.4", ""]),
    "PixelData": st.one_of(st.none(), st.binary(max_size=64)),
}


@st.composite
def dicom_series_edits(draw) -> list[dict]:
    """Per slice (3 to 4 slices): tag edits to apply to an otherwise valid slice."""
    n = draw(st.integers(3, 4))
    return [{tag: draw(TAG_VALUES[tag]) for tag in draw(st.lists(st.sampled_from(sorted(TAG_VALUES)), max_size=3,
                                                                    unique=True))} for _ in range(n)]


def _write_series(folder: Path, edits: list[dict]) -> None:
    import pydicom

    for i, edit in enumerate(edits):
        path = dicom_slice(folder / f"s{i}.dcm", 2.0 * i)
        ds = pydicom.dcmread(path)
        for tag, value in edit.items():
            if value is None:
                if tag in ds:
                    delattr(ds, tag)
            elif tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
                ds[tag].value = "\\".join(repr(float(v)) for v in value)  # written as text, even "nan"
            elif tag in ("RescaleSlope", "RescaleIntercept"):
                ds[tag].value = repr(float(value))
            else:
                setattr(ds, tag, value)
        ds.save_as(path, enforce_file_format=True)


@fuzz(250)
@given(dicom_series_edits())
def test_dicom_tags(edits):
    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        try:
            with pydicom.config.disable_value_validation():
                _write_series(folder, edits)
        except (ValueError, TypeError, OverflowError, struct.error):
            return  # pydicom cannot write this combination at all; nothing to read
        _read_or_refuse(folder)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuzzed_inputs_through_the_cli(seed, tmp_path):
    """A few drawn NIfTI files through ``python -m tuckertrt segment``: one line or a result, never a traceback,
    and nothing beside the output changed."""
    data = _drawn(seed)
    ct = tmp_path / "ct.nii"
    ct.write_bytes(data)
    before = tree_state(tmp_path)
    code, _, err = run_subprocess(["segment", ct, "-o", tmp_path / "out" / "seg.nii.gz", "--model", "fixture-3mm"],
                                  tmp_path)
    assert "Traceback" not in err and "internal error" not in err
    if code != 0:
        assert code in (1, 2) and len(err.strip().splitlines()) == 1
        assert changes(before, tree_state(tmp_path)) == []


def _drawn(seed: int) -> bytes:
    """The NIfTI bytes of one deterministic draw: each seed breaks a different part of the header."""
    rng = np.random.default_rng(seed)
    data = bytearray(BASE)
    name = sorted(HEADER_FIELDS)[[4, 8, 11][seed]]  # pixdim, scl_slope, srow
    offset, fmt, _ = HEADER_FIELDS[name]
    count = struct.calcsize("<" + fmt) // 4
    struct.pack_into("<" + fmt, data, offset, *(rng.choice([np.nan, 0.0, 1e7], count).tolist()))
    return bytes(data)
