"""Labels from a backend's output and how well two labelings agree, voxel by voxel."""
from __future__ import annotations

from typing import Any

import numpy as np


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    return np.argmax(logits, axis=1).astype(np.int16)


def output_labels(runner: Any, output: np.ndarray) -> np.ndarray:
    """Labels ``(N, *patch)`` of a backend's ``run`` output: logits, or features for the runner's ``head``."""
    head = getattr(runner, "head", None)
    if head is None:
        return argmax_labels(output)
    return np.stack([head.labels(features) for features in output]).astype(np.int16)


def agreement(reference: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of voxels with the same label."""
    return float(np.mean(reference == labels))
