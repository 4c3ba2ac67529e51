"""Held-out validation at each checkpoint: the network's sliding-window segmentation of the validation volumes
against a reference (the teacher's segmentation when distilling, the ground truth otherwise)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from tuckertrt.inference.sliding_window import sliding_window_argmax, sliding_window_logits
from tuckertrt.models.spec import ModelSpec
from tuckertrt.parity.metrics import compare_labels
from tuckertrt.training.sampling import Volume

SUMMARY_KEYS = ("score", "mean_dice", "mean_nsd", "voxel_agreement", "foreground_agreement")


def patch_predictor(network: torch.nn.Module, spec: ModelSpec, device: str):
    from tuckertrt.backends.registry import open_backend

    return open_backend("torch", network, input_shape=(1, spec.input_channels, *spec.patch_size), device=device).run


def network_logits(network: torch.nn.Module, volume: Volume, spec: ModelSpec, tile_step: float,
                   device: str) -> np.ndarray:
    """Sliding-window logits ``(K, *S)`` of a volume, as ``segment`` computes them."""
    return sliding_window_logits(volume.image, patch_predictor(network, spec, device), spec.patch_size,
                                 spec.num_classes, tile_step)


@dataclass
class Validation:
    """Scores a network on ``volumes`` against ``references`` (label maps in the same grids)."""

    volumes: Sequence[Volume]
    references: Sequence[np.ndarray]
    spec: ModelSpec
    tile_step: float
    device: str
    reference_kind: str  # "teacher" or "labels"

    def __call__(self, network: torch.nn.Module) -> dict[str, Any]:
        predict = patch_predictor(network, self.spec, self.device)
        names = {k: v for k, v in self.spec.labels.items() if k != 0}
        cases, voxels, same, fg_voxels, fg_same = {}, 0, 0, 0, 0
        for volume, reference in zip(self.volumes, self.references):
            pred = sliding_window_argmax(volume.image, predict, self.spec.patch_size, self.spec.num_classes,
                                         self.tile_step)
            scores = compare_labels(reference, pred, self.spec.spacing, names, ts_ids=False)
            cases[volume.name] = {"dice": {c.name: c.dice for c in scores.classes},
                                  "nsd": {c.name: c.nsd for c in scores.classes}}
            fg = reference != 0
            voxels, same = voxels + reference.size, same + int((reference == pred).sum())
            fg_voxels, fg_same = fg_voxels + int(fg.sum()), fg_same + int((reference == pred)[fg].sum())
        per_class = _class_means(cases, "dice")
        mean_dice = float(np.mean(list(per_class.values()))) if per_class else float("nan")
        return {"score": mean_dice, "mean_dice": mean_dice,
                "mean_nsd": float(np.mean(list(_class_means(cases, "nsd").values()))) if per_class else float("nan"),
                "voxel_agreement": same / max(voxels, 1),
                "foreground_agreement": fg_same / fg_voxels if fg_voxels else 1.0,
                "reference": self.reference_kind, "per_class_dice": per_class, "cases": cases}


def _class_means(cases: dict[str, dict[str, dict[str, float]]], metric: str) -> dict[str, float]:
    """Each class's mean over the cases where the reference has it."""
    values: dict[str, list[float]] = {}
    for case in cases.values():
        for name, v in case[metric].items():
            values.setdefault(name, []).append(v)
    return {name: float(np.mean(v)) for name, v in values.items()}


def summary(validation: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a validation result (no per-case detail)."""
    return {k: validation[k] for k in SUMMARY_KEYS if k in validation}
