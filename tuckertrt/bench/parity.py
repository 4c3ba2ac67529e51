"""Segmentation agreement of a configuration with the uncompressed f32 reference on the same patch."""
from __future__ import annotations

import numpy as np

from tuckertrt.parity.metrics import dice


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
