"""Full-CT segmentation on any backend: preprocess, sliding window, merge part models, back to the input grid."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.head import LinearHead
from tuckertrt.heap import trim_heap
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP
from tuckertrt.inference.io import CTImage, is_nifti, label_dtype, read_ct
from tuckertrt.inference.outputs import SUMMARY_NAME, check_outputs, output_plan, save_result, write_summary
from tuckertrt.inference.preprocess import labels_to_input_grid, normalize_ct, to_network_grid
from tuckertrt.inference.sliding_window import sliding_window_argmax, sliding_window_features_argmax
from tuckertrt.models.spec import ModelSpec

if TYPE_CHECKING:
    from tuckertrt.inference.ts_outputs import TSOutputs
    from tuckertrt.models.loaded import LoadedModel

# CTs of at least this many voxels free the runtimes' working memory before their labels go back to the input
# grid: it lowers the peak where those labels are large, and costs the next CT ~0.05 s to allocate it again
RELEASE_MEMORY_VOXELS = 32 << 20


@dataclass
class Runner:
    """A model's spec with something that predicts one patch: a :class:`~tuckertrt.backends.Backend` or a
    callable ``(1, C, *patch) -> (1, K, *patch)``. A backend opened with ``head="auto"`` returns features and
    carries the head, applied after the sliding window."""

    spec: ModelSpec
    predictor: Any
    description: dict[str, Any] = field(default_factory=dict)

    def predict(self, patch: np.ndarray) -> np.ndarray:
        run = getattr(self.predictor, "run", self.predictor)
        return run(patch)

    @property
    def head(self) -> LinearHead | None:
        """The head applied after the sliding window, when the predictor returns features instead of logits."""
        return getattr(self.predictor, "head", None)

    def release_memory(self) -> None:
        """Free the working memory of the runtime and of the head's kernels (allocated again on the next CT)."""
        for owner in (self.predictor, self.head):
            getattr(owner, "release_memory", lambda: None)()

    def describe(self) -> dict[str, Any]:
        facts = self.predictor.describe() if hasattr(self.predictor, "describe") else {"backend": "callable"}
        return {"model": self.spec.name, **facts, **self.description}


RunnerLike = Union[Runner, "LoadedModel"]


def as_runner(item: Any, device: str | None = None, precision: str = "fp32") -> Runner:
    """A :class:`Runner`, or a :class:`~tuckertrt.models.LoadedModel` run directly with torch."""
    if isinstance(item, Runner):
        return item
    from tuckertrt.backends.registry import open_backend
    from tuckertrt.models.loaded import LoadedModel

    if isinstance(item, LoadedModel):
        extra = {"decomposition_df": item.decomposition.get("df")} if item.decomposition else {}
        return Runner(item.spec, open_backend("torch", item, precision, device=device), extra)
    raise TuckerTRTError(f"cannot run {type(item).__name__}: expected a LoadedModel or a Runner")


@dataclass
class SegmentationResult:
    """Labels of one CT in the input's voxel grid, with the class names and how they were made."""

    image: CTImage
    labels: np.ndarray
    class_names: dict[int, str]
    seconds: float
    tiles: int
    runners: list[dict[str, Any]]
    tile_step: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (read, resample, network...)

    @property
    def case(self) -> str:
        return self.image.case_name

    def present(self) -> list[int]:
        """The labels that occur, besides 0 (counted slab by slab: no sorted copy of the volume)."""
        seen = np.zeros(int(self.labels.max(initial=0)) + 1, dtype=bool)
        for k in range(self.labels.shape[-1]):
            seen |= np.bincount(self.labels[..., k].ravel(order="K"), minlength=seen.size).astype(bool)
        return [int(v) for v in np.flatnonzero(seen) if v != 0]

    def summary(self) -> dict[str, Any]:
        return {"case": self.case, "source": str(self.image.source), "shape": list(self.labels.shape),
                "labels": {str(k): v for k, v in self.class_names.items()}, "present": self.present(),
                "seconds": round(self.seconds, 3), "tiles": self.tiles, "tile_step": self.tile_step,
                "runners": self.runners, "stage_seconds": {k: round(v, 3) for k, v in self.stages.items()}}

    def save(self, labels_path: str | os.PathLike, masks: bool = False, ts: "TSOutputs | None" = None
             ) -> list[Path]:
        """Write the multilabel NIfTI, a JSON sidecar beside it, with ``masks`` one NIfTI per class, and the
        TotalSegmentator-style outputs ``ts`` asks for (statistics.json, DICOM-SEG) in the case folder."""
        return save_result(self, Path(labels_path), masks, ts)


def segment_volume(ct: str | os.PathLike | CTImage, models: RunnerLike | Sequence[RunnerLike],
                   tile_step: float = DEFAULT_TILE_STEP, progress: bool = False) -> SegmentationResult:
    """Segment one CT (path or :class:`CTImage`) with one model or a set of part models (merged by name).

    Models that share a network grid (axis order and spacing: the five ``total-1.5mm`` parts) share one resampled
    volume; their labels are merged in that grid and resampled back once. A CT read here from a path is dropped
    once resampled (the result's ``image`` keeps its affine and header, with an empty array), so the input and
    the accumulation of the network's outputs are never in memory together; for a large CT
    (:data:`RELEASE_MEMORY_VOXELS`) the runtimes' working memory is freed before the labels go back to the input
    grid."""
    clock = _Stages()
    image = ct if isinstance(ct, CTImage) else clock.run("read", read_ct, ct)
    runners = [as_runner(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    if not runners:
        raise TuckerTRTError("no model to segment with")
    groups: dict[tuple, list[Runner]] = {}
    for runner in runners:
        spec = runner.spec
        groups.setdefault((spec.reader_axes, spec.transpose_forward, spec.spacing), []).append(runner)
    grids = {key: clock.run("resample", to_network_grid, image.array, image.affine, group[0].spec, order=1)
             for key, group in groups.items()}
    if not isinstance(ct, CTImage):
        image = replace(image, array=np.empty((0, 0, 0), dtype=image.array.dtype))
        trim_heap()
    parts, n_tiles = [], 0
    for key, group in groups.items():
        grid, geometry = grids.pop(key)
        net_parts = []
        for runner in group:
            spec = runner.spec
            data = clock.run("normalise", normalize_ct, grid, spec.intensity)[None] if spec.intensity else grid[None]
            counter = _CountingPredictor(runner.predict)
            window = sliding_window_features_argmax if runner.head is not None else sliding_window_argmax
            net_labels = clock.run("sliding_window", window, data, counter, spec.patch_size,
                                   runner.head if runner.head is not None else spec.num_classes, tile_step,
                                   progress=progress, desc=f"{image.case_name} [{spec.name}]")
            clock.move("sliding_window", "network", counter.seconds)
            n_tiles += counter.calls
            net_parts.append((net_labels, spec))
            if np.prod(geometry.input_shape) >= RELEASE_MEMORY_VOXELS:  # before the input-grid labels exist
                clock.run("sliding_window", runner.release_memory)
        del grid
        trim_heap()
        merged, names = clock.run("merge", merge_parts, net_parts)
        parts.append((clock.run("resample_back", labels_to_input_grid, merged, geometry, group[0].spec),
                      _merged_spec(group[0].spec, names)))
    labels, names = clock.run("merge", merge_parts, parts) if len(parts) > 1 else (parts[0][0], parts[0][1].labels)
    return SegmentationResult(image, labels, {k: v for k, v in names.items() if k != 0}, clock.total(), n_tiles,
                              [r.describe() for r in runners], tile_step, clock.seconds)


def _merged_spec(spec: ModelSpec, names: dict[int, str]) -> ModelSpec:
    """``spec`` carrying a merged label map's names (what :func:`merge_parts` needs to merge it again)."""
    return replace(spec, labels={0: "background", **names}, num_classes=max(names, default=0) + 1)


class _Stages:
    """Seconds spent per named stage of one segmentation."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def move(self, source: str, dest: str, seconds: float) -> None:
        """Count ``seconds`` of ``source`` as ``dest`` (the network's share of the sliding window)."""
        self.seconds[source] -= seconds
        self.seconds[dest] = self.seconds.get(dest, 0.0) + seconds

    def total(self) -> float:
        return sum(v for k, v in self.seconds.items() if k != "read")


class _CountingPredictor:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]):
        self.predict = predict
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        self.calls += 1
        start = time.perf_counter()
        try:
            return self.predict(patch)
        finally:
            self.seconds += time.perf_counter() - start


def merge_parts(parts: Sequence[tuple[np.ndarray, ModelSpec]]) -> tuple[np.ndarray, dict[int, str]]:
    """One label map from several part models, by class name.

    Target ids are TotalSegmentator's ``total`` ids when every name is a TS class (the five 1.5 mm parts become
    the 117-class map, as TS merges them: later parts overwrite earlier ones), otherwise consecutive ids in order
    of appearance. A single model keeps its own ids."""
    if len(parts) == 1:
        labels, spec = parts[0]
        return labels, {k: v for k, v in spec.labels.items() if k != 0}
    from tuckertrt.models.presets import ts_total_classes

    all_names = [name for _, spec in parts for k, name in sorted(spec.labels.items()) if k != 0]
    ts_ids = {name: i for i, name in ts_total_classes().items()}
    if all(name in ts_ids for name in all_names):
        target = ts_ids
    else:
        target = {name: i + 1 for i, name in enumerate(dict.fromkeys(all_names))}
    names = {i: name for name, i in target.items() if name in set(all_names)}
    merged = np.zeros(parts[0][0].shape, dtype=label_dtype(max(target.values())))
    for labels, spec in parts:
        for k, name in spec.labels.items():
            if k != 0:
                merged[labels == k] = target[name]
    return merged, dict(sorted(names.items()))


@dataclass
class BatchResult:
    """What :func:`segment_many` wrote per case, and which cases failed (with the one-line reason)."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def segment_many(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                 models: RunnerLike | Sequence[RunnerLike], tile_step: float = DEFAULT_TILE_STEP,
                 masks: bool = False, progress: bool = False, keep_going: bool = True,
                 on_case: Callable[[str, str | None], None] | None = None, *, summary: bool = True,
                 check_only: bool = False, ts: "TSOutputs | None" = None) -> BatchResult:
    """Segment CTs case by case into ``out_dir`` (or into the ``.nii.gz`` file ``out_dir`` names for a single
    input). A failing case is recorded and skipped (``keep_going``) or raised. Outputs that would overwrite an
    input or a file tuckertrt did not write are refused before anything runs (``check_only``: only that).
    With a folder ``out_dir`` and ``summary``, each case's status goes to ``segment_summary.json`` there.
    ``ts`` adds TotalSegmentator's outputs (statistics.json, DICOM-SEG, --roi-subset); options that do not fit
    the inputs or the model are refused first."""
    inputs = [Path(p) for p in inputs]
    plan = output_plan(inputs, Path(out_dir))
    runners = [as_runner(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    if ts:  # the ROI names are checked once the models (their class names) are known
        ts.check(inputs, [n for r in runners for k, n in r.spec.labels.items() if k != 0] if runners else None)
    summary_path = Path(out_dir) / SUMMARY_NAME if summary and not is_nifti(Path(out_dir)) else None
    check_outputs(plan, inputs, masks, summary_path, ts.case_files() if ts else ())
    result = BatchResult()
    if check_only:
        return result
    statuses: list[dict[str, Any]] = []
    for path, dest in zip(inputs, plan):
        start = time.perf_counter()
        try:
            # statistics need the CT's intensities after segmentation: keep the image read here
            source = read_ct(path) if ts and ts.statistics else path
            seg = segment_volume(source, runners, tile_step, progress)
            seg = ts.restrict(seg) if ts else seg
            result.written[dest.case] = seg.save(dest.labels, masks, ts)
            result.summaries[dest.case] = seg.summary()
            error = None
        except (TuckerTRTError, OSError, MemoryError) as e:
            error = str(e) or type(e).__name__
            if not keep_going:
                if isinstance(e, OSError):
                    raise TuckerTRTError(f"{dest.case}: {error}") from None
                raise
            result.failed[dest.case] = error
        statuses.append({"case": dest.case, "input": str(path), "status": "failed" if error else "ok",
                         "error": error, "outputs": [str(p) for p in result.written.get(dest.case, [])],
                         "seconds": round(time.perf_counter() - start, 3)})
        if summary_path is not None:
            write_summary(summary_path, statuses)
        if on_case:
            on_case(dest.case, error)
    return result
