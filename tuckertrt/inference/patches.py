"""Real-CT patches for checks: the example CT (or any CT) preprocessed as for inference and fitted to a patch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tuckertrt.data import example_ct
from tuckertrt.inference.io import read_ct
from tuckertrt.inference.preprocess import preprocess
from tuckertrt.models.spec import ModelSpec


def fit_to_patch(volume: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """Centre crop or zero-pad a normalised volume to ``patch`` (zero is what nnU-Net pads with)."""
    out = np.zeros(patch, dtype=np.float32)
    src, dst = [], []
    for size, want in zip(volume.shape, patch):
        n = min(size, want)
        s, d = (size - n) // 2, (want - n) // 2
        src.append(slice(s, s + n))
        dst.append(slice(d, d + n))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def ct_patch(spec: ModelSpec, patch: tuple[int, ...] | None = None, ct_path: str | Path | None = None,
             batch: int = 1) -> np.ndarray:
    """A normalised patch (batch, C, *patch) of real CT (default: the example CT) in the network's axis order.

    The volume goes through the inference preprocessing (RAS, axis order, resampling to the model spacing, CT
    normalisation) and is centre-cropped/zero-padded to the patch: a realistic input for parity checks.
    """
    image = read_ct(Path(ct_path) if ct_path else example_ct())
    normalised = fit_to_patch(preprocess(image.array, image.affine, spec).data[0], tuple(patch or spec.patch_size))
    return np.broadcast_to(normalised, (batch, spec.input_channels, *normalised.shape)).copy()


def default_patch(spec: ModelSpec, patch: tuple[int, ...] | None = None) -> tuple[np.ndarray, str]:
    """The bundled example CT as a normalised patch, with a label saying so."""
    return ct_patch(spec, patch), f"CT {example_ct().name}"
