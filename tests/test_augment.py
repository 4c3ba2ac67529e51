"""Training-batch augmentation: the image, labels and in-volume mask move together; nothing changes when every
probability is zero; the same seed gives the same batch."""
from __future__ import annotations

import numpy as np
import torch

from tuckertrt.training.augment import Augmentation
from tuckertrt.training.sampling import Batch

SPATIAL_ONLY = Augmentation(p_spatial=1.0, p_brightness=0, p_contrast=0, p_gamma=0, p_noise=0)
NONE = Augmentation(p_spatial=0, p_brightness=0, p_contrast=0, p_gamma=0, p_noise=0)


def _blocks(n: int = 2, size: int = 24) -> Batch:
    """Labels of four slabs (ids 0..3) and an image equal to them, all of it inside the volume."""
    labels = torch.zeros(n, size, size, size, dtype=torch.long)
    for k in range(4):
        labels[:, :, :, k * size // 4:(k + 1) * size // 4] = k
    return Batch(labels[:, None].float(), labels, None, torch.ones(n, size, size, size, dtype=torch.bool),
                 torch.zeros(n, dtype=torch.bool), [(0, 0, 0)] * n)


def test_spatial_transform_moves_image_labels_and_mask_together():
    torch.manual_seed(0)
    out = SPATIAL_ONLY(_blocks())
    assert out.labels.dtype == torch.long and set(out.labels.unique().tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(out.labels, _blocks().labels)  # it did move
    inside = out.valid
    assert 0.2 < inside.float().mean() < 1.0  # rotated/zoomed: part of the patch now lies outside the volume
    same = (out.image[:, 0].round().long() == out.labels)[inside].float().mean()
    assert same > 0.9, float(same)  # bilinear vs nearest differ only on the slab boundaries
    assert not out.labels[~inside].any()  # outside the volume: background


def test_no_augmentation_is_the_identity_and_seeds_repeat():
    batch = _blocks()
    out = NONE(batch)
    assert torch.equal(out.image, batch.image) and torch.equal(out.labels, batch.labels)
    torch.manual_seed(3)
    a = Augmentation()(_blocks())
    torch.manual_seed(3)
    b = Augmentation()(_blocks())
    assert torch.equal(a.image, b.image) and torch.equal(a.labels, b.labels)


def test_intensity_transforms_keep_labels_and_stay_finite():
    torch.manual_seed(1)
    intensity = Augmentation(p_spatial=0, p_brightness=1, p_contrast=1, p_gamma=1, p_noise=1)
    batch = _blocks()
    out = intensity(batch)
    assert torch.equal(out.labels, batch.labels) and torch.isfinite(out.image).all()
    assert not np.allclose(out.image.numpy(), batch.image.numpy())
