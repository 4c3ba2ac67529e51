"""The served whole-CT segmentation model: its tensors, request limits and JSON carried as UTF-8 bytes."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuckertrt.errors import TuckerTRTError

MODEL_NAME = "tuckertrt_segment"
VOLUME, VOLUME_INT16, AFFINE, CASE_ID = "volume", "volume_int16", "affine", "case_id"
LABELS, CLASS_NAMES, INFO = "labels", "class_names", "info"
# A CT holds integer HU as int16 (half the bytes); anything else is sent as float32.
VOLUME_DTYPES = {VOLUME: np.float32, VOLUME_INT16: np.int16}
MAX_CASE_ID = 128
CLASS_NAMES_PARAMETER = "tuckertrt.class_names"  # in the served model's config: {id: name} as JSON


@dataclass(frozen=True)
class RequestLimits:
    """What one request may declare; checked from the shape and dtype alone, before any conversion."""

    max_voxels: int = 1024 * 1024 * 2048

    def check_volume(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if len(shape) != 3:
            raise TuckerTRTError(f"volume must be 3D (x, y, z), got shape {tuple(shape)}")
        if min(shape) < 2:
            raise TuckerTRTError(f"volume shape {tuple(shape)} is not a 3D volume (an axis shorter than 2)")
        voxels = int(np.prod(np.asarray(shape, dtype=np.int64)))
        if voxels > self.max_voxels:
            raise TuckerTRTError(f"volume of {'x'.join(map(str, shape))} = {voxels} voxels "
                                 f"({voxels * np.dtype(dtype).itemsize / 1e9:.1f} GB), over the server's limit "
                                 f"of {self.max_voxels} voxels")


def json_tensor(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def read_json_tensor(array: np.ndarray, what: str) -> Any:
    try:
        return json.loads(np.asarray(array, dtype=np.uint8).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TuckerTRTError(f"{what} is not UTF-8 JSON") from None


def case_id_tensor(case: str) -> np.ndarray:
    return np.frombuffer(case.encode()[:MAX_CASE_ID], dtype=np.uint8)


def read_case_id(array: np.ndarray | None) -> str:
    """The request's case id, reduced to a log-safe alphabet (it is written to the server's log)."""
    if array is None:
        return "request"
    text = np.asarray(array, dtype=np.uint8).tobytes()[:MAX_CASE_ID].decode("utf-8", errors="replace")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "request"
