"""Full-CT segmentation on any backend: preprocess, sliding window, merge part models, back to the input grid."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.head import LinearHead
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP
from tuckertrt.inference.io import CTImage, is_nifti, label_dtype, read_ct
from tuckertrt.inference.outputs import SUMMARY_NAME, check_outputs, output_plan, save_result, write_summary
from tuckertrt.inference.preprocess import labels_to_input_grid, normalize_ct, to_network_grid
from tuckertrt.inference.sliding_window import sliding_window_argmax, sliding_window_features_argmax
from tuckertrt.models.spec import ModelSpec

if TYPE_CHECKING:
    from tuckertrt.inference.ts_outputs import TSOutputs
    from tuckertrt.models.loaded import LoadedModel



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

    @property
    def case(self) -> str:
        return self.image.case_name

    def present(self) -> list[int]:
        return [int(v) for v in np.unique(self.labels) if v != 0]

    def summary(self) -> dict[str, Any]:
        return {"case": self.case, "source": str(self.image.source), "shape": list(self.labels.shape),
                "labels": {str(k): v for k, v in self.class_names.items()}, "present": self.present(),
                "seconds": round(self.seconds, 3), "tiles": self.tiles, "tile_step": self.tile_step,
                "runners": self.runners}

    def save(self, labels_path: str | os.PathLike, masks: bool = False, ts: "TSOutputs | None" = None
             ) -> list[Path]:
        """Write the multilabel NIfTI, a JSON sidecar beside it, with ``masks`` one NIfTI per class, and the
        TotalSegmentator-style outputs ``ts`` asks for (statistics.json, DICOM-SEG) in the case folder."""
        return save_result(self, Path(labels_path), masks, ts)


def segment_volume(ct: str | os.PathLike | CTImage, models: RunnerLike | Sequence[RunnerLike],
                   tile_step: float = DEFAULT_TILE_STEP, progress: bool = False) -> SegmentationResult:
    """Segment one CT (path or :class:`CTImage`) with one model or a set of part models (merged by name)."""
    image = ct if isinstance(ct, CTImage) else read_ct(ct)
    runners = [as_runner(m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    if not runners:
        raise TuckerTRTError("no model to segment with")
    start = time.perf_counter()
    grids: dict[tuple, tuple[np.ndarray, Any]] = {}
    parts, n_tiles = [], 0
    for runner in runners:
        spec = runner.spec
        key = (spec.reader_axes, spec.transpose_forward, spec.spacing)
        if key not in grids:
            grids[key] = to_network_grid(image.array, image.affine, spec, order=1)
        grid, geometry = grids[key]
        data = normalize_ct(grid, spec.intensity)[None] if spec.intensity else grid[None]
        counter = _CountingPredictor(runner.predict)
        desc = f"{image.case_name} [{spec.name}]"
        if runner.head is not None:
            net_labels = sliding_window_features_argmax(data, counter, spec.patch_size, runner.head, tile_step,
                                                        progress=progress, desc=desc)
        else:
            net_labels = sliding_window_argmax(data, counter, spec.patch_size, spec.num_classes, tile_step,
                                               progress=progress, desc=desc)
        n_tiles += counter.calls
        parts.append((labels_to_input_grid(net_labels, geometry, spec), spec))
    labels, names = merge_parts(parts)
    return SegmentationResult(image, labels, names, time.perf_counter() - start, n_tiles,
                              [r.describe() for r in runners], tile_step)


class _CountingPredictor:
    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]):
        self.predict = predict
        self.calls = 0

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.predict(patch)


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
            seg = segment_volume(path, runners, tile_step, progress)
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
