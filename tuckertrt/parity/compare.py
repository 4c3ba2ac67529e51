"""Compare two runners on the same input with polygraphy's Comparator and a segmentation-aware compare function.

Every artifact (ONNX graph, OpenVINO model, TensorRT engine, the PyTorch network) is opened as a tuckertrt
:class:`~tuckertrt.backends.base.Backend`; ONNX Runtime sessions run in polygraphy's own ``OnnxrtRunner``, every
other backend through :class:`BackendRunner`. :class:`SegmentationCompareFunc` judges logits the way a
segmentation cares about them: absolute-error statistics (max / median / p99) and the fraction of voxels whose
argmax class agrees.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from tuckertrt.backends.base import Backend
from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference.patches import ct_patch, default_patch, fit_to_patch
from tuckertrt.models.spec import ModelSpec

INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria: max abs error (None: not checked) and the minimum fraction of agreeing argmax voxels.

    With ``tie_margin`` the argmax criterion counts only decisive voxels, whose reference top-2 logit margin is at
    least ``tie_margin``: a random-weight network has ~1 % of voxels within 1e-3 of a tie, where any rounding flips
    the class.
    """

    atol: float | None
    min_argmax: float
    tie_margin: float | None = None


# By the lower precision of the pair. FP32: ONNX Runtime's CPU InstanceNormalization accumulates in float32
# (1.5e-4 relative error on a 1.6 M-voxel channel vs 9e-7 for torch), ~1e-3 on the logits of a full TS patch.
# FP16 logits legitimately differ by ~1e-2: judged on the segmentation (argmax) only.
TOLERANCES = {"fp32": Tolerance(atol=2e-3, min_argmax=0.999), "fp16": Tolerance(atol=None, min_argmax=0.999),
              "bf16": Tolerance(atol=None, min_argmax=0.995), "int8": Tolerance(atol=None, min_argmax=0.99)}
RANDOM_WEIGHTS_TIE_MARGIN = 1e-2  # about twice the largest FP16 logit error seen on TS-3mm
_PRECISION_ORDER = ("int8", "bf16", "fp16", "fp32")


def tolerance_for(precision_a: str, precision_b: str) -> Tolerance:
    """The tolerance of the less precise of the two."""
    known = [p for p in _PRECISION_ORDER if p in (precision_a, precision_b)]
    return TOLERANCES[known[0] if known else "fp32"]


@dataclass
class LogitStats:
    """Error statistics of two logit arrays (N, K, *spatial); truthy when they pass the tolerance.

    ``decisive_agreement``/``near_ties`` (argmax agreement over decisive voxels, fraction of near-tied ones) are
    set when the tolerance has a ``tie_margin``.
    """

    max_abs: float
    median_abs: float
    p99_abs: float
    mean_abs: float
    argmax_agreement: float
    voxels: int
    passed: bool
    decisive_agreement: float | None = None
    near_ties: float | None = None

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        text = (f"max abs {self.max_abs:.3g}, median {self.median_abs:.3g}, p99 {self.p99_abs:.3g}, "
                f"argmax agreement {self.argmax_agreement:.6f} of {self.voxels} voxels")
        if self.decisive_agreement is not None:
            text += f" ({self.decisive_agreement:.6f} of decisive ones, {self.near_ties:.2%} near ties)"
        return text


def top2(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax over axis 1 and the top-2 margin, one class slice at a time (several times faster than
    ``argmax(axis=1)`` on 118 x 1.6 M logits, and no (K, *spatial) temporaries)."""
    best = np.full(logits[:, 0].shape, -np.inf, dtype=np.float32)
    second = best.copy()
    index = np.zeros(best.shape, dtype=np.int32)
    better = np.empty(best.shape, dtype=bool)
    for k in range(logits.shape[1]):
        x = logits[:, k]
        np.greater(x, best, out=better)
        np.maximum(second, x, out=second)
        np.copyto(second, best, where=better)
        np.copyto(index, np.int32(k), where=better)
        np.copyto(best, x, where=better)
    return index, best - second


def logit_stats(a: np.ndarray, b: np.ndarray, tolerance: Tolerance, max_samples: int = 4_000_000) -> LogitStats:
    """Compare ``b`` with the reference ``a``, one class slice at a time.

    Max and mean abs error are exact; median and p99 come from a systematic sample of at most ``max_samples``
    values (exact for smaller outputs).
    """
    if a.shape != b.shape:
        raise TuckerTRTError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    step = max(1, a.size // max_samples)
    diff = np.empty(a[:, 0].shape, dtype=np.float32)
    max_abs, total, samples = 0.0, 0.0, []
    for k in range(a.shape[1]):
        np.abs(np.subtract(a[:, k], b[:, k], out=diff, dtype=np.float32), out=diff)
        max_abs = max(max_abs, float(diff.max()))
        total += float(diff.sum(dtype=np.float64))  # NaN/inf propagate into the total
        samples.append(diff.ravel()[::step].copy())
    finite = bool(np.isfinite(total))
    max_abs = max_abs if finite else float("inf")
    median_abs, p99_abs = (float(v) for v in np.quantile(np.concatenate(samples), [0.5, 0.99])) if finite \
        else (float("inf"),) * 2
    mean_abs = total / a.size if finite else float("inf")
    index_a, margin = top2(a)
    agree = index_a == top2(b)[0]
    agreement = float(agree.mean())
    decisive_agreement = near_ties = None
    if tolerance.tie_margin is not None:
        decisive = margin >= tolerance.tie_margin
        near_ties = 1.0 - float(decisive.mean())
        decisive_agreement = float(agree[decisive].mean()) if decisive.any() else 1.0
    judged = agreement if decisive_agreement is None else decisive_agreement
    passed = finite and judged >= tolerance.min_argmax and (tolerance.atol is None or max_abs <= tolerance.atol)
    return LogitStats(max_abs, median_abs, p99_abs, mean_abs, agreement, int(agree.size), passed,
                      decisive_agreement, near_ties)


class SegmentationCompareFunc:
    """A polygraphy compare function: ``(IterationResult, IterationResult) -> OrderedDict[name, LogitStats]``."""

    def __init__(self, tolerance: Tolerance):
        self.tolerance = tolerance

    def __call__(self, result0: Any, result1: Any) -> OrderedDict:
        return OrderedDict((name, logit_stats(out, result1[name], self.tolerance))
                           for name, out in result0.items() if name in result1)


class BackendRunner(BaseRunner):
    """A polygraphy runner around any tuckertrt Backend (torch, OpenVINO, TensorRT, ...)."""

    def __init__(self, backend: Backend, name: str | None = None):
        super().__init__(name=name, prefix=f"tuckertrt-{backend.name}")
        self.backend = backend

    def activate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self) -> TensorMetadata:
        shape = [None if d < 0 else d for d in self.backend.input_shape]
        return TensorMetadata().add(INPUT_NAME, np.float32, shape)

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        start = time.perf_counter()
        logits = self.backend.run(feed_dict[INPUT_NAME])
        self.inference_time = time.perf_counter() - start
        return OrderedDict([(OUTPUT_NAME, logits)])

    def deactivate_impl(self) -> None:
        pass


def polygraphy_runner(backend: Backend, name: str) -> BaseRunner:
    """polygraphy's OnnxrtRunner for an ONNX Runtime session, the adapter for everything else."""
    session = getattr(backend, "session", None)
    if backend.name == "onnxruntime" and session is not None:
        from polygraphy.backend.onnxrt import OnnxrtRunner

        return OnnxrtRunner(session, name=name)
    return BackendRunner(backend, name=name)


@dataclass
class ComparisonResult:
    """The verdict of one comparison and what it rests on."""

    a: dict[str, Any]
    b: dict[str, Any]
    stats: LogitStats
    tolerance: Tolerance
    input: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.stats.passed

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def summary(self) -> str:
        return f"{self.verdict}: {self.a['label']} vs {self.b['label']}: {self.stats}"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "passed": self.passed, "a": self.a, "b": self.b,
                "stats": asdict(self.stats), "tolerance": asdict(self.tolerance), "input": self.input,
                "seconds": self.seconds}


def compare_runs(backends: dict[str, Backend], pairs: list[tuple[str, str, Tolerance | None]], patch: np.ndarray,
                 input_label: str = "given patch") -> dict[str, ComparisonResult]:
    """Run every backend once on ``patch`` (one polygraphy Comparator run) and judge each (a, b, tolerance) pair.

    A None tolerance means :func:`tolerance_for` the pair's precisions. Results are keyed ``"<a>_vs_<b>"``.
    """
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    labels = list(backends)
    runners = [polygraphy_runner(backend, label) for label, backend in backends.items()]
    feed = [OrderedDict([(INPUT_NAME, np.ascontiguousarray(patch, dtype=np.float32))])]
    severity, colors = G_LOGGER.module_severity, G_LOGGER.colors
    G_LOGGER.module_severity, G_LOGGER.colors = G_LOGGER.CRITICAL, False  # the verdict is ours to print
    try:
        runs = Comparator.run(runners, data_loader=feed)
        seconds = {label: float(iters[0].runtime) for label, iters in runs if iters and iters[0].runtime}
        described = {label: {"label": label, **backend.describe()} for label, backend in backends.items()}
        results = {}
        for a, b, tolerance in pairs:
            tolerance = tolerance or tolerance_for(backends[a].precision, backends[b].precision)
            accuracy = Comparator.compare_accuracy(runs, comparisons=[(labels.index(a), labels.index(b))],
                                                   compare_func=SegmentationCompareFunc(tolerance))
            stats = next(iter(accuracy[0][(a, b)][0].values()))
            results[f"{a}_vs_{b}"] = ComparisonResult(described[a], described[b], stats, tolerance, input_label,
                                                      {k: seconds[k] for k in (a, b) if k in seconds})
    finally:
        G_LOGGER.module_severity, G_LOGGER.colors = severity, colors
    return results


def compare_backends(a: Backend, b: Backend, patch: np.ndarray, tolerance: Tolerance | None = None,
                     labels: tuple[str, str] = ("a", "b"), input_label: str = "given patch") -> ComparisonResult:
    """Run ``a`` and ``b`` on ``patch`` through polygraphy's Comparator and judge the logits."""
    if labels[0] == labels[1]:
        labels = (f"a:{labels[0]}", f"b:{labels[1]}")
    results = compare_runs({labels[0]: a, labels[1]: b}, [(labels[0], labels[1], tolerance)], patch, input_label)
    return next(iter(results.values()))


def reference_patch(spec: ModelSpec, labels_path: str | Path, patch: tuple[int, ...] | None = None) -> np.ndarray:
    """Reference labels (TotalSegmentator ids, e.g. TS's own segmentation of the CT) on the same patch as
    :func:`ct_patch` takes from that CT, in the model's label ids (matched by class name), shape ``patch``."""
    from tuckertrt.inference.io import read_nifti
    from tuckertrt.inference.preprocess import to_network_grid
    from tuckertrt.models.presets import ts_total_classes
    from tuckertrt.parity.metrics import relabel_by_name

    seg = read_nifti(Path(labels_path))
    grid, _ = to_network_grid(seg.array.astype(np.int16), seg.affine, spec, order=0)
    ids = relabel_by_name(grid.astype(np.int64), ts_total_classes(), spec.labels)
    return fit_to_patch(ids, tuple(patch or spec.patch_size)).astype(np.int16)


_SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt"}


@dataclass
class Artifact:
    """An opened artifact: its backend, the model spec if known (for CT normalisation), a label, and whether its
    weights are trained (None: unknown)."""

    backend: Backend
    spec: ModelSpec | None
    label: str
    trained: bool | None = None


def open_artifact(ref: str | Path) -> Artifact:
    """An export dir or artifact file (by suffix; manifest-verified where one lies beside it), else a MODEL ref
    run by PyTorch."""
    from tuckertrt.backends.registry import open_backend
    from tuckertrt.graph.manifest import MANIFEST_NAME, load_manifest, verify_artifact

    path = Path(ref)
    manifest_dir = path if path.is_dir() else path.parent
    manifest = load_manifest(manifest_dir) if (manifest_dir / MANIFEST_NAME).is_file() else None
    spec = ModelSpec.from_json(manifest["model"]["spec"]) if manifest else None
    trained = manifest["model"].get("trained") if manifest else None
    if path.is_dir() and manifest:
        return Artifact(open_backend("onnxruntime", path, "fp32"), spec, str(path), trained)
    if path.is_file() and path.suffix in _SUFFIX_BACKENDS:
        entry = verify_artifact(path) if manifest and path.name in manifest["artifacts"] else {}
        backend = open_backend(_SUFFIX_BACKENDS[path.suffix], path, entry.get("precision", "fp32"))
        return Artifact(backend, spec, str(path), trained)
    from tuckertrt.decomposition import load_model

    model = load_model(ref)
    return Artifact(open_backend("torch", model, device="cpu"), model.spec, f"torch:{ref}", model.trained)


def load_patch(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A normalised patch from .npy: (Z, Y, X) or (N, C, Z, Y, X) that fits ``shape`` (-1: any size)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise TuckerTRTError(f"cannot read {path} as a .npy array: {e}") from None
    if array.ndim == len(shape) - 2:
        array = array[None, None]
    if array.ndim != len(shape) or any(w >= 0 and w != s for w, s in zip(shape, array.shape)):
        raise TuckerTRTError(f"{path} has shape {array.shape}; the artifacts take {shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def compare_artifacts(a: str | Path, b: str | Path, input_npy: str | Path | None = None,
                      ct: str | Path | None = None, atol: float | None = None, min_argmax: float | None = None,
                      tie_margin: float | None = None) -> ComparisonResult:
    """Open ``a`` and ``b``, build the input (.npy, a CT volume, or the example CT), compare them.

    Without ``tie_margin``, a reference ``a`` with random weights is judged on decisive voxels
    (:data:`RANDOM_WEIGHTS_TIE_MARGIN`), a trained or unknown one on all voxels.
    """
    first, second = open_artifact(a), open_artifact(b)
    try:
        shape = tuple(int(d) for d in first.backend.input_shape)
        spec = first.spec or second.spec
        if input_npy:
            patch, label = load_patch(input_npy, shape), f"npy {Path(input_npy).name}"
        elif spec is None:
            raise TuckerTRTError("neither artifact has a manifest with the model's CT normalisation; pass --input")
        else:
            spatial = tuple(s if s > 0 else p for s, p in zip(shape[2:], spec.patch_size))
            patch, label = (ct_patch(spec, spatial, ct), f"CT {Path(ct).name}") if ct else default_patch(spec, spatial)
        base = tolerance_for(first.backend.precision, second.backend.precision)
        if tie_margin is None and first.trained is False:
            tie_margin = RANDOM_WEIGHTS_TIE_MARGIN
        tolerance = Tolerance(atol if atol is not None else base.atol,
                              min_argmax if min_argmax is not None else base.min_argmax, tie_margin)
        return compare_backends(first.backend, second.backend, patch, tolerance,
                                labels=(first.label, second.label), input_label=label)
    finally:
        first.backend.close()
        second.backend.close()
