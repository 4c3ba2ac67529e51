"""nnU-Net-style data augmentation of training batches, on the batch's device.

Spatial: a random rotation and zoom about the patch centre (trilinear for the image, nearest for labels
and the in-volume mask); intensity: brightness, contrast, gamma and Gaussian noise. When distilling, the teacher
runs on the augmented batch, so the student learns to agree with it on inputs the calibration CTs do not contain
as they are (another scanner's contrast, another patient's size), not only on those CTs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tuckertrt.training.sampling import Batch


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges (nnU-Net's defaults where it has one)."""

    p_spatial: float = 0.5
    rotation_degrees: float = 30.0
    scale: tuple[float, float] = (0.7, 1.4)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_std: float = 0.1

    def __call__(self, batch: Batch) -> Batch:
        """A new batch (image, labels, in-volume mask) transformed with torch's global generator."""
        image, labels, valid = batch.image.float(), batch.labels, batch.valid
        n = image.shape[0]
        spatial = torch.rand(n) < self.p_spatial
        if bool(spatial.any()):
            grid = F.affine_grid(_affines(n, spatial, self.rotation_degrees, self.scale).to(image.device),
                                 list(image.shape), align_corners=False)
            image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            valid = _nearest(valid, grid).bool()
            labels = None if labels is None else _nearest(labels, grid).long()
        image = torch.stack([self._intensity(x) for x in image])
        return Batch(image, labels, None, valid, batch.truth, batch.origins)

    def _intensity(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < self.p_brightness:
            x = x * _uniform(self.brightness)
        if torch.rand(()) < self.p_contrast:
            mean = x.mean()
            x = (x - mean) * _uniform(self.contrast) + mean
        if torch.rand(()) < self.p_gamma:  # on the patch's range, which it keeps
            low, high = x.min(), x.max()
            span = (high - low).clamp_min(1e-8)
            x = ((x - low) / span) ** _uniform(self.gamma) * span + low
        if torch.rand(()) < self.p_noise:
            x = x + torch.randn_like(x) * float(torch.rand(())) * self.noise_std
        return x


def _uniform(bounds: tuple[float, float]) -> float:
    low, high = bounds
    return low + (high - low) * float(torch.rand(()))


def _affines(n: int, which: torch.Tensor, degrees: float, scale: tuple[float, float]) -> torch.Tensor:
    """``(n, 3, 4)`` sampling matrices: identity where ``which`` is false, else a rotation and a zoom."""
    theta = torch.zeros(n, 3, 4)
    theta[:, :, :3] = torch.eye(3)
    for i in which.nonzero().flatten().tolist():
        rotation = torch.eye(3)
        for a, b in ((0, 1), (0, 2), (1, 2)):
            angle = math.radians(degrees) * (2 * float(torch.rand(())) - 1)
            plane = torch.eye(3)
            plane[a, a] = plane[b, b] = math.cos(angle)
            plane[a, b], plane[b, a] = -math.sin(angle), math.sin(angle)
            rotation = rotation @ plane
        theta[i, :, :3] = rotation / _uniform(scale)  # isotropic, as nnU-Net: a larger scale enlarges the anatomy
    return theta


def _nearest(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(values[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                         align_corners=False)[:, 0]
