"""Patch sampling as nnU-Net's 3D data loader does it (without augmentation).

A patch is either random (its lower corner uniform over the positions nnU-Net allows, which let a patch stick
out of a volume smaller than itself) or, with probability ``oversample_foreground`` (nnU-Net: 1/3), centred on a
voxel of a randomly chosen foreground class. Voxels outside the volume are zero-padded (labels: background).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

MAX_LOCATIONS_PER_CLASS = 10_000  # nnU-Net's ``num_samples`` for class locations


@dataclass
class Volume:
    """One preprocessed volume in the network grid.

    ``labels`` are ground truth (``truth``) or the teacher's argmax; ``soft`` the teacher's cached logits
    (``(K, *S)`` float16) when distilling with a cache.
    """

    name: str
    image: np.ndarray  # (C, *S) float32, normalised
    labels: np.ndarray | None = None  # (*S) integer class ids
    soft: np.ndarray | None = None
    truth: bool = False
    _locations: dict[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    def class_locations(self, seed: int = 1234) -> dict[int, np.ndarray]:
        """Up to 10 000 voxel coordinates per foreground class (a fixed random subset, as nnU-Net stores)."""
        if self._locations is None:
            rng = np.random.default_rng(seed)
            self._locations = {}
            if self.labels is not None:
                for c in np.unique(self.labels):
                    if c == 0:
                        continue
                    coords = np.argwhere(self.labels == c)
                    if len(coords) > MAX_LOCATIONS_PER_CLASS:
                        coords = coords[rng.choice(len(coords), MAX_LOCATIONS_PER_CLASS, replace=False)]
                    self._locations[int(c)] = coords
        return self._locations


@dataclass
class Batch:
    image: torch.Tensor  # (B, C, *P)
    labels: torch.Tensor | None  # (B, *P) long
    soft: torch.Tensor | None  # (B, K, *P) float32 teacher logits
    valid: torch.Tensor  # (B, *P) bool: inside the volume
    truth: torch.Tensor  # (B,) bool: labels are ground truth
    origins: list[tuple[int, ...]]

    def to(self, device: torch.device) -> "Batch":
        move = (lambda t: None if t is None else t.to(device))
        return Batch(move(self.image), move(self.labels), move(self.soft), move(self.valid), self.truth,
                     self.origins)


def lower_bounds(shape: Sequence[int], patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's range of patch lower corners: a patch larger than the volume is centred with padding."""
    shape, patch = np.asarray(shape), np.asarray(patch)
    need = np.maximum(patch - shape, 0)
    lbs = -(need // 2)
    ubs = shape + need // 2 + need % 2 - patch
    return lbs, ubs


def crop(array: np.ndarray, origin: Sequence[int], patch: Sequence[int], fill: float = 0) -> np.ndarray:
    """``array[..., origin:origin+patch]`` over the last ``len(patch)`` axes, padded with ``fill`` outside."""
    lead = array.ndim - len(patch)
    out = np.full(array.shape[:lead] + tuple(patch), fill, dtype=array.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for o, p, n in zip(origin, patch, array.shape[lead:]):
        lo, hi = max(o, 0), min(o + p, n)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - o, lo - o + max(0, hi - lo)))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchSampler:
    """Draws batches of patches from ``volumes`` with a caller-owned ``numpy.random.Generator``."""

    def __init__(self, volumes: Sequence[Volume], patch: Sequence[int], batch_size: int,
                 oversample_foreground: float = 1 / 3):
        if not volumes:
            raise ValueError("no volumes to sample from")
        self.volumes = list(volumes)
        self.patch = tuple(int(p) for p in patch)
        self.batch_size = batch_size
        self.oversample_foreground = oversample_foreground

    def origin(self, volume: Volume, rng: np.random.Generator) -> tuple[int, ...]:
        lbs, ubs = lower_bounds(volume.shape, self.patch)
        locations = volume.class_locations()
        if locations and rng.random() < self.oversample_foreground:
            classes = sorted(locations)
            coords = locations[classes[rng.integers(len(classes))]]
            voxel = coords[rng.integers(len(coords))]
            return tuple(int(max(lb, v - p // 2)) for lb, v, p in zip(lbs, voxel, self.patch))
        return tuple(int(rng.integers(lb, ub + 1)) for lb, ub in zip(lbs, ubs))

    def sample(self, rng: np.random.Generator) -> Batch:
        images, labels, soft, valid, truth, origins = [], [], [], [], [], []
        for _ in range(self.batch_size):
            volume = self.volumes[rng.integers(len(self.volumes))]
            origin = self.origin(volume, rng)
            origins.append(origin)
            images.append(crop(volume.image, origin, self.patch))
            valid.append(crop(np.ones(volume.shape, dtype=bool), origin, self.patch, False))
            labels.append(crop(volume.labels, origin, self.patch) if volume.labels is not None else None)
            soft.append(crop(volume.soft, origin, self.patch) if volume.soft is not None else None)
            truth.append(volume.truth)
        return Batch(
            image=torch.from_numpy(np.stack(images)),
            labels=_stack([np.asarray(x, dtype=np.int64) if x is not None else None for x in labels]),
            soft=_stack([x.astype(np.float32) if x is not None else None for x in soft]),
            valid=torch.from_numpy(np.stack(valid)),
            truth=torch.tensor(truth),
            origins=origins,
        )


def _stack(items: list[np.ndarray | None]) -> torch.Tensor | None:
    """Stack per-sample arrays; None if no sample has one, zeros standing in for samples that lack it."""
    present = [x for x in items if x is not None]
    if not present:
        return None
    like = present[0]
    return torch.from_numpy(np.stack([x if x is not None else np.zeros_like(like) for x in items]))
