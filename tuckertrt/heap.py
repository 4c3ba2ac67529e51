"""Handing the C heap's free pages back to the operating system."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


def trim_heap() -> None:
    """Return free memory inside the C heap to the operating system (glibc's ``malloc_trim``).

    Loading and compiling a model frees many mid-sized buffers (protobuf tensors, runtime graph copies); glibc
    keeps the freed space mapped, so the resident size stays as high as if they were alive (~120 MB after loading
    the TS-3mm network on OpenVINO). A no-op where the C library has no ``malloc_trim`` (not glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None
