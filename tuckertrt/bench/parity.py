"""Segmentation agreement of a configuration with the uncompressed f32 reference on the same patch."""
from __future__ import annotations

import numpy as np


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    return np.argmax(logits, axis=1).astype(np.int16)


def agreement(reference: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of voxels with the same label."""
    return float(np.mean(reference == labels))


def mean_dice(reference: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean Dice over the foreground classes present in ``reference`` (TS's convention); None if none are."""
    classes = [c for c in np.unique(reference) if c != 0]
    if not classes:
        return None
    scores = []
    for c in classes:
        ref, seg = reference == c, labels == c
        scores.append(2.0 * np.logical_and(ref, seg).sum() / (ref.sum() + seg.sum()))
    return float(np.mean(scores))
