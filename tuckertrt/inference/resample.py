"""Separable, chunked, multi-threaded resampling with scipy ``zoom``'s grid (output ``i`` samples input
``i * (n_in - 1) / (n_out - 1)``, the corners aligned).

Order 1 (linear) is the tensor product of 1-D linear interpolations, so resampling one axis at a time gives the
trilinear result of ``ndimage.zoom(order=1)`` (computed here in float32 instead of float64: differences of a
few 1e-6 relative). Order 0 (nearest) is a gather with one index list per axis and reproduces ``zoom(order=0)``
exactly. Work is split into slabs along the first output axis and run on a thread pool (numpy releases the GIL
in gathers and arithmetic); each slab reads only the input rows it needs, so any integer input (int16 HU) is
converted to float one slab at a time and the memory beyond input and output is a few slabs.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from tuckertrt.errors import TuckerTRTError

SLAB_BYTES = 16 << 20  # per-slab working set of the first (largest) pass


def sample_positions(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinate of each output index on ``zoom``'s corner-aligned grid (float64)."""
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    return np.arange(n_out, dtype=np.float64) * scale


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output index for order 0 (``zoom`` rounds half up: ``floor(c + 0.5)``)."""
    return np.minimum(np.floor(sample_positions(n_in, n_out) + 0.5).astype(np.intp), n_in - 1)


def linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lower index, upper index, weight of the upper)`` per output index for order 1."""
    c = sample_positions(n_in, n_out)
    lo = np.minimum(np.floor(c).astype(np.intp), n_in - 1)
    return lo, np.minimum(lo + 1, n_in - 1), (c - lo).astype(np.float32)


def default_threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def resample(array: np.ndarray, shape: Sequence[int], order: int, out: np.ndarray | None = None,
             threads: int | None = None) -> np.ndarray:
    """``array`` (3D) resampled to ``shape``: order 1 → float32, order 0 → ``array``'s dtype. With ``out`` (any
    writable array of ``shape``, e.g. a transposed view of the final volume) the result is written there, cast
    to its dtype. Returns ``array`` itself when the shape is unchanged and no ``out`` is given."""
    shape = tuple(int(n) for n in shape)
    if array.ndim != 3 or len(shape) != 3:
        raise TuckerTRTError(f"resampling needs a 3D array and shape, got {array.shape} -> {shape}")
    if order not in (0, 1):
        raise TuckerTRTError(f"resampling order must be 0 or 1, got {order}")
    if out is None:
        if tuple(array.shape) == shape:
            return array
        out = np.empty(shape, dtype=np.float32 if order == 1 else array.dtype)
    elif tuple(out.shape) != shape:
        raise TuckerTRTError(f"output array has shape {out.shape}, expected {shape}")
    row_bytes = int(np.prod(array.shape[1:])) * 4
    rows = max(1, min(shape[0], SLAB_BYTES // max(row_bytes, 1)))
    slabs = [slice(i, min(i + rows, shape[0])) for i in range(0, shape[0], rows)]
    fill = _fill_nearest if order == 0 else _fill_linear
    plan = [nearest_indices(n, m) for n, m in zip(array.shape, shape)] if order == 0 else \
        [linear_weights(n, m) for n, m in zip(array.shape, shape)]
    workers = min(threads or default_threads(), len(slabs))
    if workers <= 1:
        for s in slabs:
            fill(array, out, s, plan)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(fill, array, out, s, plan) for s in slabs]:
                done.result()
    return out


def _fill_nearest(array: np.ndarray, out: np.ndarray, rows: slice, plan: list[np.ndarray]) -> None:
    i0, i1, i2 = plan
    out[rows] = array[np.ix_(i0[rows], i1, i2)]


def _fill_linear(array: np.ndarray, out: np.ndarray, rows: slice, plan: list[tuple]) -> None:
    block = _lerp(array, 0, *(p[rows] for p in plan[0]))
    # the remaining axes, the one that shrinks most first (less data for the other)
    rest = sorted((1, 2), key=lambda a: len(plan[a][0]) / array.shape[a])
    for axis in rest:
        block = _lerp(block, axis, *plan[axis])
    if np.issubdtype(out.dtype, np.integer):
        np.rint(block, out=block)
    out[rows] = block


def _lerp(array: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` at the rows ``lo``/``hi`` with upper weight ``w``,
    float32."""
    a = np.take(array, lo, axis=axis).astype(np.float32, copy=False)
    b = np.take(array, hi, axis=axis).astype(np.float32, copy=False)
    shape = [1, 1, 1]
    shape[axis] = -1
    w = w.reshape(shape)
    b -= a
    b *= w
    a += b  # a + w (b - a) = (1 - w) a + w b
    return a
