"""TotalSegmentator + nnU-Net preprocessing and its inverse.

Forward: reorient to RAS (nibabel ``as_closest_canonical``), change the axis order from nibabel's (x, y, z) to
the plans' reader order (SimpleITKIO: (z, y, x)) and apply ``transpose_forward``, resample to the model spacing
(scipy ``zoom``'s grid, order 1 for the image, order 0 for labels; :mod:`tuckertrt.inference.resample`),
CT-normalise (clip to the foreground 0.5/99.5 percentiles, z-score). Backward (labels only): resample to the
pre-resampling shape with order 0, undo the transpose and the reorientation, so the labels lie in the input's voxel
grid. Reorientation and axis order are views: the input is read where it lies (an int16 CT stays int16 until its
slabs are interpolated) and the labels are written straight into the input-grid array.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference.resample import resample
from tuckertrt.models.spec import IntensityProperties, ModelSpec


@dataclass(frozen=True)
class Geometry:
    """How a network-order array maps back onto the input's voxel grid."""

    orientation: np.ndarray  # nibabel ornt taking the input axes to RAS
    network_shape: tuple[int, ...]  # input in network axis order, before resampling
    resampled_shape: tuple[int, ...]
    input_spacing: tuple[float, ...]  # in network axis order
    target_spacing: tuple[float, ...]
    input_shape: tuple[int, ...]  # the input array's shape (x, y, z)


@dataclass
class Preprocessed:
    data: np.ndarray  # (C=1, *resampled_shape) float32, normalised
    geometry: Geometry


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Reorient like ``as_closest_canonical``; returns the array, its orientation transform and RAS spacing."""
    import nibabel as nib

    ornt = nib.io_orientation(affine)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ras_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(ornt):
        ras_spacing[int(target)] = float(spacing[axis])
    return nib.apply_orientation(array, ornt), ornt, tuple(ras_spacing)


def network_axes(array: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """nibabel (x, y, z) → the network's axis order (reader order, then ``transpose_forward``)."""
    if spec.reader_axes == "zyx":
        array = array.transpose(2, 1, 0)
    return array.transpose(spec.transpose_forward)


def network_spacing(spacing_xyz: tuple[float, ...], spec: ModelSpec) -> tuple[float, ...]:
    ordered = tuple(spacing_xyz[::-1]) if spec.reader_axes == "zyx" else tuple(spacing_xyz)
    return tuple(ordered[i] for i in spec.transpose_forward)


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]
                    ) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: round(old_shape * old_spacing / new_spacing)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def normalize_ct(array: np.ndarray, intensity: IntensityProperties) -> np.ndarray:
    """nnU-Net ``CTNormalization``: clip to the foreground percentiles, then z-score."""
    out = np.clip(array, intensity.lower, intensity.upper).astype(np.float32, copy=False)
    out -= np.float32(intensity.mean)
    out /= np.float32(max(intensity.std, 1e-8))
    return out


def to_network_grid(array: np.ndarray, affine: np.ndarray, spec: ModelSpec, order: int
                    ) -> tuple[np.ndarray, Geometry]:
    """Reorient, reorder axes and resample ``array`` (image: order 1 → float32, labels: order 0 → their dtype) to
    the network grid."""
    ras, ornt, ras_spacing = to_ras(array, affine)
    net = network_axes(ras, spec)
    spacing = network_spacing(ras_spacing, spec)
    shape = resampled_shape(net.shape, spacing, spec.spacing)
    geometry = Geometry(ornt, tuple(net.shape), shape, spacing, tuple(spec.spacing), tuple(array.shape))
    if shape == tuple(net.shape):
        grid = np.ascontiguousarray(net)
        return (grid.astype(np.float32, copy=False) if order == 1 else grid), geometry
    return resample(net, shape, order), geometry


def preprocess(array: np.ndarray, affine: np.ndarray, spec: ModelSpec) -> Preprocessed:
    """A CT (x, y, z, HU) → the normalised network input ``(1, *shape)`` and the geometry to undo it."""
    if spec.normalization != "CTNormalization":
        raise TuckerTRTError(f"{spec.name} uses {spec.normalization}; only CTNormalization is supported")
    if spec.intensity is None:
        raise TuckerTRTError(f"{spec.name} has no foreground intensity properties for CT normalisation")
    data, geometry = to_network_grid(array, affine, spec, order=1)
    return Preprocessed(normalize_ct(data, spec.intensity)[None], geometry)


def labels_to_input_grid(labels: np.ndarray, geometry: Geometry, spec: ModelSpec) -> np.ndarray:
    """Network-grid labels → the input's voxel grid and orientation (order-0 resampling, as TotalSegmentator),
    written into a Fortran-ordered array (NIfTI's own layout) through the views that undo the axis order and
    reorientation: no full-size intermediate."""
    import nibabel as nib

    out = np.empty(geometry.input_shape, dtype=labels.dtype, order="F")
    view = network_axes(nib.apply_orientation(out, geometry.orientation), spec)  # writes land in ``out``
    if not np.shares_memory(view, out):
        raise TuckerTRTError("reorientation did not give a view of the output array")
    resample(labels, geometry.network_shape, 0, out=view)
    return out
