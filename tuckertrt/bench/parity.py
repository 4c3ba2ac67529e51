"""Segmentation agreement of a configuration with the uncompressed f32 reference on the same patch."""
from __future__ import annotations

from typing import Any

import numpy as np

from tuckertrt.parity.metrics import dice


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


def class_dice(reference: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Dice of every foreground class present in ``reference`` (TS's convention)."""
    return {int(c): dice(reference == c, labels == c) for c in np.unique(reference) if c != 0}


def dice_summary(reference: np.ndarray, labels: np.ndarray) -> tuple[float | None, float | None]:
    """(mean, worst) Dice over the foreground classes present in ``reference``; (None, None) if none are."""
    scores = list(class_dice(reference, labels).values())
    return (float(np.mean(scores)), min(scores)) if scores else (None, None)


def format_score(value: float | None) -> str:
    """A Dice or agreement for a log line; "—" when there is none."""
    return "—" if value is None else f"{value:.4f}"
