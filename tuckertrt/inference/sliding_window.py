"""Gaussian-weighted sliding-window prediction, as nnU-Net does it, over any patch predictor.

Two forms: predictors that return logits ``(1, K, *patch)`` (the head inside the graph), and predictors that
return channels-last features ``(1, *patch, F)`` with the head applied once per voxel after the averaging
(:mod:`tuckertrt.graph.head`; exact, because both the averaging and the head are linear).

Memory: for labels, the accumulator holds ``K`` logit (or ``F`` feature) channels over one patch depth of the
(padded) network grid, a band that moves along the first axis with the tiles; rows that no later tile reaches are
turned into labels and dropped. It is float32 unless the predictor returns 16-bit values (a bf16 runtime's
features: 16-bit sums of them are as precise as they are) or float32 would exceed ``max_accumulator_bytes``; then
it is float16 (nnU-Net itself accumulates in half precision on the GPU); the weights are one float32 channel.
Only labels leave the argmax forms, so the logit volume is never held, copied or resampled.
(:func:`sliding_window_logits`, for training's validation, returns the whole logit volume.)
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage

from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.head import LinearHead, as_tensor
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP
from tuckertrt.inference.io import label_dtype

Predictor = Callable[[np.ndarray], np.ndarray]
MAX_ACCUMULATOR_BYTES = 4 << 30
ADD_BLOCKS = 16  # a tile is added in this many blocks of rows (bounds the temporaries)


def gaussian_importance_map(patch: Sequence[int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """A centred Gaussian (sigma = patch * sigma_scale) with max 1 and no zeros (min clipped to the smallest
    non-zero value), like nnU-Net's ``compute_gaussian``. Computed once per patch shape (read-only)."""
    return _gaussian(tuple(int(p) for p in patch), float(sigma_scale))


@functools.lru_cache(maxsize=4)
def _gaussian(patch: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    impulse = np.zeros(patch, dtype=np.float64)
    impulse[tuple(p // 2 for p in patch)] = 1.0
    gauss = ndimage.gaussian_filter(impulse, [p * sigma_scale for p in patch], mode="constant", cval=0.0)
    gauss /= gauss.max()
    gauss = gauss.astype(np.float32)
    gauss[gauss == 0] = gauss[gauss != 0].min()
    gauss.flags.writeable = False
    return gauss


def window_starts(image_size: int, patch: int, tile_step: float) -> list[int]:
    """Tile start offsets along one axis (nnU-Net's ``compute_steps_for_sliding_window``): the fewest tiles
    whose step is at most ``tile_step * patch``, spread evenly from 0 to ``image_size - patch``."""
    if image_size < patch:
        raise TuckerTRTError(f"image size {image_size} is smaller than the patch {patch}; pad first")
    n = int(np.ceil((image_size - patch) / (patch * tile_step))) + 1
    if n == 1:
        return [0]
    step = (image_size - patch) / (n - 1)
    return [int(round(step * i)) for i in range(n)]


def tiles(shape: Sequence[int], patch: Sequence[int], tile_step: float) -> list[tuple[slice, ...]]:
    starts = [window_starts(s, p, tile_step) for s, p in zip(shape, patch)]
    return [tuple(slice(o, o + p) for o, p in zip(origin, patch)) for origin in itertools.product(*starts)]


def pad_to_patch(data: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad the spatial axes of ``(C, *shape)`` symmetrically to at least ``patch``; also return the crop
    that removes the padding again."""
    pads = [(0, 0)]
    crop = [slice(None)]
    for size, p in zip(data.shape[1:], patch):
        extra = max(0, p - size)
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + size))
    if not any(sum(p) for p in pads):
        return data, tuple(crop)
    return np.pad(data, pads, mode="constant", constant_values=0), tuple(crop)


def sliding_window_argmax(data: np.ndarray, predict: Predictor, patch: Sequence[int], num_classes: int,
                          tile_step: float = DEFAULT_TILE_STEP, progress: bool = False, desc: str = "tiles",
                          max_accumulator_bytes: int = MAX_ACCUMULATOR_BYTES) -> np.ndarray:
    """Label map (argmax of the Gaussian-weighted mean of the tile logits) of ``data`` ``(C, *shape)``, with a
    band accumulator (:class:`_Band`)."""
    patch, padded, crop, windows = _tiling(data, patch, tile_step, progress, desc)

    def logits(window: tuple[slice, ...]) -> torch.Tensor:
        out = np.asarray(predict(padded[(slice(None), *window)][None]))
        if out.shape != (1, num_classes, *patch):
            raise TuckerTRTError(f"predictor returned shape {out.shape}, expected {(1, num_classes, *patch)}")
        return as_tensor(out[0]).movedim(0, -1)  # channels-last view

    labels = _band_argmax(padded.shape[1:], patch, num_classes, num_classes, windows, logits,
                          lambda sums, weights: torch.max(sums, -1).indices.numpy(), max_accumulator_bytes)
    return labels[crop[1:]]


def sliding_window_logits(data: np.ndarray, predict: Predictor, patch: Sequence[int], num_classes: int,
                          tile_step: float = DEFAULT_TILE_STEP, progress: bool = False, desc: str = "tiles",
                          max_accumulator_bytes: int = MAX_ACCUMULATOR_BYTES) -> np.ndarray:
    """Weighted-mean logits ``(K, *shape)`` of ``data`` ``(C, *shape)``, predicted tile by tile."""
    patch, padded, crop, windows = _tiling(data, patch, tile_step, progress, desc)
    shape = padded.shape[1:]
    nbytes = num_classes * int(np.prod(shape)) * 4
    dtype = np.float32 if nbytes <= max_accumulator_bytes else np.float16
    accumulated = np.zeros((num_classes, *shape), dtype=dtype)
    weights = np.zeros(shape, dtype=np.float32)
    gauss = _floored(gaussian_importance_map(patch), dtype)
    for window in windows:
        out = np.asarray(predict(padded[(slice(None), *window)][None]))
        if out.shape != (1, num_classes, *patch):
            raise TuckerTRTError(f"predictor returned shape {out.shape}, expected {(1, num_classes, *patch)}")
        weighted = np.multiply(out[0], gauss, out=out[0] if out.flags.writeable else None)  # no extra K-copy
        accumulated[(slice(None), *window)] += weighted
        weights[window] += gauss
    accumulated /= weights.astype(dtype, copy=False)
    return accumulated[crop]


def sliding_window_features_argmax(data: np.ndarray, predict: Predictor, patch: Sequence[int], head: LinearHead,
                                   tile_step: float = DEFAULT_TILE_STEP, progress: bool = False, desc: str = "tiles",
                                   max_accumulator_bytes: int = MAX_ACCUMULATOR_BYTES) -> np.ndarray:
    """Label map of ``data`` ``(C, *shape)`` from a predictor of channels-last features ``(1, *patch, F)``:
    Gaussian-weighted sums of the features in a band accumulator (:class:`_Band`), then ``head`` once per
    voxel as the band moves on."""
    patch, padded, crop, windows = _tiling(data, patch, tile_step, progress, desc)
    shape = padded.shape[1:]
    channels = head.num_features

    def features(window: tuple[slice, ...]) -> torch.Tensor:
        out = as_tensor(np.asarray(predict(padded[(slice(None), *window)][None])))
        if tuple(out.shape) != (1, *patch, channels):
            raise TuckerTRTError(f"predictor returned shape {tuple(out.shape)}, expected {(1, *patch, channels)}")
        return out[0]

    if shape == patch:  # one tile: its Gaussian weight (> 0) scales every class's logit alike, argmax unchanged
        return head.labels(features(next(windows))[crop[1:]])
    labels = _band_argmax(shape, patch, channels, head.num_classes, windows, features, head.labels,
                          max_accumulator_bytes)
    return labels[crop[1:]]


class _Band:
    """Gaussian-weighted sums ``(depth, *rest, C)`` and weights over the rows ``[base, base + depth)`` of the
    first spatial axis, in a ring: row ``r`` lives at ``r % depth``. Tiles arrive in order of their first-axis
    start (``tiles`` yields them so); rows before the next start receive no more tiles, so they are final, are
    turned into labels and their slots reused: the accumulator holds one patch depth of the volume instead of all
    of it, and nothing is moved as the band advances. The elementwise work runs on one torch thread (it is
    memory-bound, and torch's OpenMP threads wait on each other when the runtime's threads or other processes
    hold the cores: 5× slower with 2 threads than with 1 on a loaded 2-core host)."""

    def __init__(self, shape: tuple[int, ...], depth: int, channels: int, dtype: torch.dtype):
        self.sums = torch.zeros((depth, *shape[1:], channels), dtype=dtype)
        self.weights = torch.zeros((depth, *shape[1:]), dtype=torch.float32)
        self.base = 0

    def _slots(self, first: int, count: int) -> Iterator[tuple[slice, slice]]:
        """(ring slots, offsets from ``first``) of the rows ``[first, first + count)``: one or two runs."""
        depth = self.sums.shape[0]
        offset = 0
        while offset < count:
            slot = (first + offset) % depth
            run = min(count - offset, depth - slot)
            yield slice(slot, slot + run), slice(offset, offset + run)
            offset += run

    def add(self, window: tuple[slice, ...], values: torch.Tensor, gauss: torch.Tensor,
            gauss32: torch.Tensor) -> None:
        step = max(1, len(values) // ADD_BLOCKS)
        with _one_torch_thread():
            for slots, rows in self._slots(window[0].start, len(values)):
                self.weights[(slots, *window[1:])] += gauss32[rows]
                for row in range(rows.start, rows.stop, step):  # blocks: 16-bit arithmetic makes f32 temporaries
                    block = slice(row, min(row + step, rows.stop))
                    target = slice(slots.start + row - rows.start, slots.start + block.stop - rows.start)
                    self.sums[(target, *window[1:])].addcmul_(values[block].to(self.sums.dtype), gauss[block])

    def advance(self, start: int, emit: Callable[[int, torch.Tensor, torch.Tensor], None]) -> None:
        """``emit(first row, sums, weights)`` for the final rows ``[base, start)``, then free their slots."""
        for slots, rows in self._slots(self.base, start - self.base):
            emit(self.base + rows.start, self.sums[slots], self.weights[slots])
            with _one_torch_thread():
                self.sums[slots] = 0
                self.weights[slots] = 0
        self.base = max(self.base, start)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def _band_argmax(shape: tuple[int, ...], patch: tuple[int, ...], channels: int, num_classes: int,
                 windows: Iterator[tuple[slice, ...]], values: Callable[[tuple[slice, ...]], torch.Tensor],
                 decide: Callable[[torch.Tensor, torch.Tensor], np.ndarray], max_accumulator_bytes: int
                 ) -> np.ndarray:
    """Labels over ``shape`` from channels-last tile ``values``, Gaussian-weighted and summed in a :class:`_Band`;
    ``decide(sums, weights)`` turns final rows into labels."""
    depth = patch[0]
    nbytes = channels * depth * int(np.prod(shape[1:])) * 4
    gauss32 = torch.from_numpy(_floored(gaussian_importance_map(patch), np.float32))
    labels = np.empty(shape, dtype=label_dtype(num_classes - 1))
    band, gauss = None, None

    def emit(first: int, sums: torch.Tensor, weights: torch.Tensor) -> None:
        labels[first:first + sums.shape[0]] = decide(sums, weights)

    for window in windows:  # final rows become labels before the next tile is predicted: one tile alive at a time
        if band is not None:
            band.advance(window[0].start, emit)
        tile = values(window)
        if band is None:  # 16-bit sums for 16-bit outputs (bf16 runtimes): as precise as what is summed
            half = tile.dtype in (torch.bfloat16, torch.float16) or nbytes > max_accumulator_bytes
            dtype = torch.float16 if half else torch.float32
            band = _Band(shape, depth, channels, dtype)
            gauss = torch.from_numpy(_floored(gaussian_importance_map(patch), np.float16 if half
                                              else np.float32))[..., None]
        band.add(window, tile, gauss, gauss32)
        del tile
    band.advance(shape[0], emit)
    return labels


def _floored(gauss: np.ndarray, dtype: type) -> np.ndarray:
    """The Gaussian, raised to ``dtype``'s smallest normal number: its far tails (≈1e-8) would underflow to 0 in a
    float16 accumulator and leave border voxels with no prediction. Negligible elsewhere (weights ≈ 0.1–1)."""
    return np.maximum(gauss, np.finfo(dtype).tiny, dtype=np.float32)


def _tiling(data: np.ndarray, patch: Sequence[int], tile_step: float, progress: bool,
            desc: str) -> tuple[tuple[int, ...], np.ndarray, tuple[slice, ...], Iterator[tuple[slice, ...]]]:
    """The patch as ints, ``data`` padded to it, the crop that undoes the padding, and the tile windows."""
    if not 0 < tile_step <= 1:
        raise TuckerTRTError(f"tile step must be in (0, 1], got {tile_step}")
    patch = tuple(int(p) for p in patch)
    padded, crop = pad_to_patch(data.astype(np.float32, copy=False), patch)
    return patch, padded, crop, _progress(tiles(padded.shape[1:], patch, tile_step), progress, desc)


def _progress(items: list, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        return iter(items)
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, unit="tile", leave=False))
