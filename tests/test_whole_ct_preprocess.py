"""The optimised whole-CT pre/post-processing against the reference implementation it replaced.

Reference: scipy ``ndimage.zoom`` on contiguous reoriented copies, labels resampled back with ``zoom(order=0)`` and
copied back through the inverse orientation, logits averaged in a full-volume accumulator. Nearest-neighbour paths
must agree bit for bit; linear resampling agrees to float32 rounding; labels of the whole chain agree on ≥ 99.9%.
"""
from __future__ import annotations

import ml_dtypes
import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.conftest import blob_ct
from tuckertrt.inference import Runner, segment_volume
from tuckertrt.inference.preprocess import (labels_to_input_grid, network_axes, normalize_ct, resampled_shape,
                                            to_network_grid)
from tuckertrt.inference.resample import resample
from tuckertrt.inference.segment import merge_parts
from tuckertrt.inference.sliding_window import sliding_window_argmax, sliding_window_logits
from tuckertrt.models.spec import IntensityProperties, ModelSpec

SPEC = ModelSpec(name="tissue", patch_size=(16, 20, 24), spacing=(2.0, 2.5, 2.0), num_classes=4,
                 labels={0: "background", 1: "fat", 2: "soft", 3: "bone"},
                 intensity=IntensityProperties(mean=0.0, std=100.0, lower=-1000.0, upper=1500.0))
AFFINES = {
    "RAS": np.diag([1.5, 1.2, 3.0, 1.0]),
    "PRI": np.array([[0.0, 1.3, 0.0, 10.0], [-1.1, 0.0, 0.0, 20.0], [0.0, 0.0, -2.7, 5.0], [0, 0, 0, 1]]),
}


def reference_zoom(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """``zoom`` as the reference called it, except at the far edge: with its default ``mode="constant"`` a last
    sample that float rounding puts a hair past the edge became background (a zero plane of labels); the optimised
    path clamps, like ``mode="nearest"``, which is identical everywhere else."""
    if tuple(array.shape) == tuple(shape):
        return array
    return ndimage.zoom(array, [n / o for n, o in zip(shape, array.shape)], order=order, mode="nearest")


def reference_network_grid(array: np.ndarray, affine: np.ndarray, spec: ModelSpec, order: int) -> np.ndarray:
    canonical = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    net = np.ascontiguousarray(network_axes(np.asanyarray(canonical.dataobj), spec))
    spacing = tuple(float(s) for s in np.sqrt((canonical.affine[:3, :3] ** 2).sum(axis=0))[::-1])
    return reference_zoom(net, resampled_shape(net.shape, spacing, spec.spacing), order)


def reference_back(labels: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], spec: ModelSpec) -> np.ndarray:
    ornt = nib.io_orientation(affine)
    ras_shape = nib.apply_orientation(np.empty(shape, np.uint8), ornt).shape
    net_shape = network_axes(np.empty(ras_shape, np.uint8), spec).shape
    back = reference_zoom(labels, net_shape, 0).transpose(spec.transpose_backward).transpose(2, 1, 0)
    inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return np.ascontiguousarray(nib.apply_orientation(back, inverse))


def tissue_logits(patch: np.ndarray) -> np.ndarray:
    """Smooth class scores from the normalised intensity: air < fat < soft tissue < bone."""
    x = patch[:, :1]
    centres = np.array([-9.0, -1.0, 0.4, 5.0], dtype=np.float32).reshape(1, 4, 1, 1, 1)
    return (-(x - centres) ** 2).astype(np.float32)


@pytest.mark.parametrize("shape,out", [((40, 33, 50), (17, 60, 21)), ((61, 50, 56), (150, 68, 68)),
                                       ((5, 7, 9), (1, 7, 20)), ((12, 12, 12), (12, 12, 12))])
def test_resampling_matches_scipy_zoom(shape, out):
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 2000, shape).astype(np.int16)
    expected = ndimage.zoom(ct.astype(np.float32), [o / i for o, i in zip(out, shape)], order=1)
    got = resample(ct, out, 1, out=np.empty(out, np.float32))
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-3  # float32 rounding of values up to 2000
    labels = rng.integers(0, 118, shape).astype(np.uint8)
    nearest = ndimage.zoom(labels, [o / i for o, i in zip(out, shape)], order=0)
    assert np.array_equal(resample(labels, out, 0, out=np.empty(out, np.uint8)), nearest)


def test_resampling_writes_through_a_transposed_view_with_any_thread_count():
    labels = np.random.default_rng(1).integers(0, 5, (30, 20, 25)).astype(np.uint8)
    expected = ndimage.zoom(labels, (70 / 30, 41 / 20, 33 / 25), order=0)
    for threads in (1, 3):
        target = np.zeros((33, 41, 70), np.uint8, order="F")
        resample(labels, (70, 41, 33), 0, out=target.T, threads=threads)
        assert np.array_equal(target.T, expected)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_network_grid_and_labels_back_match_the_reference(name):
    affine = AFFINES[name]
    ct = blob_ct((48, 40, 30), (20.0, 15.0, 12.0), 6.0).astype(np.int16)
    grid, geometry = to_network_grid(ct, affine, SPEC, order=1)
    expected = reference_network_grid(ct.astype(np.float32), affine, SPEC, order=1)
    assert grid.shape == expected.shape and np.abs(grid - expected).max() <= 1e-3
    seg = (ct > 300).astype(np.int16) + (ct > 0)
    net_seg, _ = to_network_grid(seg, affine, SPEC, order=0)
    assert np.array_equal(net_seg, reference_network_grid(seg, affine, SPEC, order=0))
    labels = np.random.default_rng(2).integers(0, 4, grid.shape).astype(np.uint8)
    back = labels_to_input_grid(labels, geometry, SPEC)
    assert back.dtype == np.uint8 and np.array_equal(back, reference_back(labels, affine, ct.shape, SPEC))


def test_band_accumulator_matches_the_full_volume_average():
    volume = normalize_ct(blob_ct((70, 45, 50), (30.0, 20.0, 25.0), 9.0), SPEC.intensity)[None]
    expected = sliding_window_logits(volume, tissue_logits, SPEC.patch_size, 4, 0.5).argmax(0)
    got = sliding_window_argmax(volume, tissue_logits, SPEC.patch_size, 4, 0.5)
    assert got.dtype == np.uint8 and (got == expected).mean() >= 0.999


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_whole_chain_matches_the_reference_labels(name, write_ct):
    affine = AFFINES[name]
    ct = blob_ct((64, 52, 40), (30.0, 25.0, 20.0), 8.0)
    ct[10:20, 10:40, 5:30] = -100.0  # fat
    path = write_ct(ct, affine)
    result = segment_volume(path, Runner(SPEC, tissue_logits))
    grid = normalize_ct(reference_network_grid(ct, affine, SPEC, order=1), SPEC.intensity)[None]
    net = sliding_window_logits(grid, tissue_logits, SPEC.patch_size, 4).argmax(0).astype(np.uint8)
    expected = reference_back(net, affine, ct.shape, SPEC)
    assert result.labels.shape == expected.shape and (result.labels == expected).mean() >= 0.999
    assert set(result.present()) == {1, 2, 3}
    assert result.image.array.size == 0  # read here: the voxels were released once resampled
    assert {"read", "resample", "network", "resample_back"} <= set(result.stages)


def test_parts_sharing_a_grid_merge_there_exactly(write_ct):
    ct = blob_ct((50, 44, 36), (25.0, 20.0, 18.0), 7.0)
    path = write_ct(ct, AFFINES["PRI"])
    soft = ModelSpec("p1", SPEC.patch_size, SPEC.spacing, 2, {0: "background", 1: "liver"}, intensity=SPEC.intensity)
    bone = ModelSpec("p2", SPEC.patch_size, SPEC.spacing, 2, {0: "background", 1: "rib_left_1"},
                     intensity=SPEC.intensity)
    parts = [Runner(soft, lambda p: tissue_logits(p)[:, [0, 2]]), Runner(bone, lambda p: tissue_logits(p)[:, [0, 3]])]
    merged = segment_volume(path, parts)
    separate = merge_parts([(segment_volume(path, runner).labels, runner.spec) for runner in parts])
    assert np.array_equal(merged.labels, separate[0]) and merged.class_names == separate[1]
    assert merged.stages["resample"] > 0 and len(merged.present()) == 2


@pytest.mark.parametrize("dtype,classes", [(torch.float16, 118), (torch.float32, 118), (torch.float32, 300)])
def test_head_kernels_agree(dtype, classes):
    """The OpenVINO head kernel (used when installed) and the torch one give the same labels, ties to the first
    of the tied classes (as ``argmax``), uint16 beyond 256 classes."""
    from tuckertrt.graph.head import LinearHead, _OpenVinoArgmax, _torch_argmax

    pytest.importorskip("openvino")
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((classes, 32)).astype(np.float32)
    weight[[7, 40, 90]] = weight[60]  # classes 7, 40, 60 and 90 tie everywhere when their biases do
    bias = rng.standard_normal(classes).astype(np.float32)
    bias[[7, 40, 60, 90]] = 4.0 + np.abs(bias).max()
    head = LinearHead(weight, bias)
    features = torch.from_numpy(rng.standard_normal((5000, 32)).astype(np.float32)).to(dtype)
    weights = torch.from_numpy(rng.random((5000, 1), dtype=np.float32) + 0.05)
    fast = _OpenVinoArgmax(head.weight, head.bias, dtype, True)(features, weights)
    plain = _torch_argmax(head.weight, head.bias)(features, weights).numpy()
    assert fast.dtype == (np.uint8 if classes <= 256 else np.uint16)
    assert np.array_equal(fast, plain) and (fast == 7).sum() > 50  # the tie decided the same way
    tie = LinearHead(np.zeros((3, 2), np.float32), np.zeros(3, np.float32))
    assert (tie.labels(np.ones((4, 2), np.float32)) == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # float32 sums; bf16 features: float16 sums
def test_feature_band_equals_full_volume_sums(dtype):
    """The ring band (rows emitted as soon as final, slots reused) gives exactly the labels of Gaussian-weighted
    sums over the whole volume, with the same arithmetic, turned into labels at once."""
    from tuckertrt.graph.head import LinearHead, as_tensor
    from tuckertrt.inference.sliding_window import _floored, gaussian_importance_map, sliding_window_features_argmax, \
        tiles

    rng = np.random.default_rng(4)
    head = LinearHead(rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal(5).astype(np.float32))
    mix = torch.from_numpy(rng.standard_normal((1, 6)).astype(np.float32))

    def features(patch: np.ndarray) -> np.ndarray:  # (1, C, *p) -> (1, *p, 6), as a runtime returns them
        out = torch.sin(torch.from_numpy(patch).movedim(1, -1) * mix).to(dtype).contiguous()
        return out.numpy() if dtype == torch.float32 else out.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)

    volume = rng.standard_normal((1, 61, 45, 50)).astype(np.float32)
    patch = (16, 20, 24)
    got = sliding_window_features_argmax(volume, features, patch, head, tile_step=0.6)
    sum_dtype = torch.float32 if dtype == torch.float32 else torch.float16
    sums = torch.zeros((*volume.shape[1:], 6), dtype=sum_dtype)
    weights = torch.zeros(volume.shape[1:], dtype=torch.float32)
    gauss = torch.from_numpy(_floored(gaussian_importance_map(patch), torch.empty(0, dtype=sum_dtype).numpy().dtype))
    for window in tiles(volume.shape[1:], patch, 0.6):
        tile = as_tensor(features(volume[(slice(None), *window)][None]))[0].to(sum_dtype)
        sums[window].addcmul_(tile, gauss[..., None])
        weights[window] += torch.from_numpy(_floored(gaussian_importance_map(patch), np.float32))
    expected = head.labels(sums, weights)
    assert len(set(w[0].start for w in tiles(volume.shape[1:], patch, 0.6))) >= 5  # the ring wraps
    assert got.dtype == np.uint8 and np.array_equal(got, expected)


def test_large_cts_release_the_runtime_memory_before_labels_go_back(write_ct, monkeypatch):
    """A CT at or above ``RELEASE_MEMORY_VOXELS`` frees the runtime's working memory once per runner, after its
    sliding window; smaller CTs keep it for the next one. The labels are the same either way."""
    from tuckertrt.inference import segment as segment_module

    class Predictor:
        released = 0

        def run(self, patch: np.ndarray) -> np.ndarray:
            return tissue_logits(patch)

        def release_memory(self) -> None:
            self.released += 1

    path = write_ct(blob_ct((40, 36, 30), (20.0, 18.0, 15.0), 6.0), AFFINES["RAS"])
    kept = Predictor()
    small = segment_volume(path, Runner(SPEC, kept))
    monkeypatch.setattr(segment_module, "RELEASE_MEMORY_VOXELS", 40 * 36 * 30)
    freed = Predictor()
    large = segment_volume(path, Runner(SPEC, freed))
    assert (kept.released, freed.released) == (0, 1) and np.array_equal(small.labels, large.labels)
