"""Shared test fixtures: the shared example data (skipped when ``../shared`` is absent) and small synthetic CTs."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalsegmentator-examples"


@pytest.fixture(scope="session", autouse=True)
def auto_backend_cache(tmp_path_factory) -> Path:
    """``segment --backend auto`` caches its exports here, not in the user's ~/.cache, shared by the session."""
    import os

    cache = tmp_path_factory.mktemp("tuckertrt-cache")
    os.environ["TUCKERTRT_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data/totalsegmentator-examples`` beside the checkout, or a skip."""
    if not (SHARED_DATA / "example_ct.nii.gz").is_file():
        pytest.skip(f"shared example data not present at {SHARED_DATA}")
    return SHARED_DATA


def blob_ct(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    """Air (-1000 HU) with a soft-tissue body (40 HU) box and a bright sphere (700 HU) at ``centre``."""
    ct = np.full(shape, -1000.0, dtype=np.float32)
    ct[2:-2, 2:-2, 1:-1] = 40.0
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    ct[np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius] = 700.0
    return ct


@pytest.fixture
def write_ct(tmp_path: Path) -> Callable[..., Path]:
    """Write a NIfTI (int16 by default) with a given array and affine; returns its path."""
    import nibabel as nib

    def write(array: np.ndarray, affine: np.ndarray | None = None, name: str = "ct.nii.gz",
              dtype: type = np.int16) -> Path:
        path = tmp_path / name
        nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), np.eye(4) if affine is None else affine), path)
        return path

    return write
