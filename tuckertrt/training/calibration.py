"""Calibration images for data-aware decomposition and rank sensitivity: crops of a clinic's own CTs,
preprocessed exactly as ``segment`` preprocesses them."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from tuckertrt.models.spec import ModelSpec
from tuckertrt.training.data import load_unlabelled
from tuckertrt.training.sampling import PatchSampler, Volume

DEFAULT_CALIBRATION_CROPS = 8


def calibration_crops(volumes: Sequence[Volume], patch: Sequence[int], count: int = DEFAULT_CALIBRATION_CROPS,
                      seed: int = 0) -> torch.Tensor:
    """``(count, C, *patch)`` crops drawn from ``volumes`` as training draws them (uniformly placed)."""
    sampler = PatchSampler(volumes, patch, count, oversample_foreground=0.0)
    return sampler.sample(np.random.default_rng(seed)).image


def calibration_images(cts: Sequence[str | os.PathLike], spec: ModelSpec,
                       count: int = DEFAULT_CALIBRATION_CROPS, seed: int = 0) -> torch.Tensor:
    """Calibration crops of the model's patch from the given CTs (NIfTI files or DICOM series)."""
    volumes, _ = load_unlabelled(cts, spec)
    return calibration_crops(volumes, spec.patch_size, count, seed)
