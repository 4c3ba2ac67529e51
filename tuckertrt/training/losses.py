"""Training objectives: nnU-Net's Dice + cross-entropy and Hinton's temperature-softened distillation loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tuckertrt.training.sampling import Batch

DICE_SMOOTH = 1e-5


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """nnU-Net's soft Dice (per sample and class, background excluded, ``batch_dice`` off), negated."""
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
    axes = tuple(range(2, logits.dim()))
    intersect = (probs * onehot).sum(axes)
    denominator = (probs.sum(axes) + onehot.sum(axes) + smooth).clamp_min(1e-8)
    return -((2 * intersect + smooth) / denominator).mean()


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """nnU-Net's ``DC_and_CE_loss`` with weights 1:1."""
    return F.cross_entropy(logits, labels) + soft_dice_loss(logits, labels)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher ‖ student) of the softmax at ``temperature``, summed over classes, averaged over (valid)
    voxels and scaled by T² (Hinton et al.) so its gradient does not shrink with the temperature."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher.to(student.dtype) / temperature, dim=1)
    per_voxel = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(1)
    if valid is not None:
        per_voxel = per_voxel[valid]
    return per_voxel.mean() * temperature**2


@dataclass
class Objective:
    """The loss of one batch: distillation on every sample with teacher targets, Dice + CE on samples with
    ground-truth labels, and optionally Dice + CE on the teacher's segmentation (pseudo-labels) elsewhere."""

    label_weight: float = 1.0
    distill_weight: float = 1.0
    temperature: float = 2.0
    pseudo_label_weight: float = 0.0

    def __call__(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        terms = []
        stats: dict[str, float] = {}
        if batch.soft is not None:
            kd = distillation_loss(logits, batch.soft, self.temperature, batch.valid)
            terms.append(self.distill_weight * kd)
            agree = logits.argmax(1) == batch.soft.argmax(1)
            stats["kd"] = float(kd.detach())
            stats["agree"] = float(agree[batch.valid].float().mean())
        if batch.labels is not None:
            for key, which, weight in (("dice_ce", batch.truth, self.label_weight),
                                       ("pseudo", ~batch.truth, self.pseudo_label_weight)):
                if weight and bool(which.any()):
                    idx = which.nonzero().flatten().to(logits.device)
                    supervised = dice_ce_loss(logits[idx], batch.labels[idx])
                    terms.append(weight * supervised)
                    stats[key] = float(supervised.detach())
        if not terms:
            raise ValueError("batch has neither teacher targets nor ground-truth labels")
        loss = torch.stack(terms).sum()
        stats["loss"] = float(loss.detach())
        return loss, stats
