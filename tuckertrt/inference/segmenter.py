"""Load once, segment many: the models of a server or a cohort worker, kept between CTs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tuckertrt.inference.io import CTImage, check_affine, check_ct_intensities
from tuckertrt.inference.outputs import CaseOutputs, check_outputs, output_plan
from tuckertrt.inference.segment import (DEFAULT_TILE_STEP, Runner, RunnerLike, SegmentationResult, as_runner,
                                         segment_volume)

# What builds the runners of a Segmenter (in this process, or in a worker process on another machine).
RunnerLoader = Callable[[], Sequence[RunnerLike]]


@dataclass
class Segmenter:
    """Runners loaded once (one model, or the part models of a set) and the tile step they segment with."""

    runners: list[Runner]
    tile_step: float = DEFAULT_TILE_STEP

    @classmethod
    def load(cls, loader: RunnerLoader, tile_step: float = DEFAULT_TILE_STEP) -> "Segmenter":
        return cls([as_runner(r) for r in loader()], tile_step)

    @property
    def class_names(self) -> list[str]:
        """Every class name the runners can write (one mask file per name with ``masks``)."""
        return [name for r in self.runners for k, name in r.spec.labels.items() if k != 0]

    def segment(self, ct: str | os.PathLike | CTImage) -> SegmentationResult:
        return segment_volume(ct, self.runners, self.tile_step)

    def segment_array(self, volume: np.ndarray, affine: np.ndarray, case: str) -> SegmentationResult:
        """Segment a volume received in memory (x, y, z in HU, with its voxel-to-world affine), checked as
        :func:`~tuckertrt.inference.io.read_ct` checks a file."""
        source = Path(case)
        check_affine(affine, source)
        array = volume.astype(np.float32, copy=False)
        check_ct_intensities(array, source)
        return self.segment(CTImage(array, np.asarray(affine, dtype=np.float64), source))

    def segment_to(self, ct: str | os.PathLike, labels_path: Path, masks: bool = False) -> tuple[SegmentationResult,
                                                                                                 list[Path]]:
        result = self.segment(ct)
        return result, result.save(labels_path, masks)

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.runners]


def plan_case_outputs(inputs: list[Path], out: Path, masks: bool) -> list[CaseOutputs]:
    """Where each input's outputs go, refused before any work if one would overwrite an input or a file tuckertrt
    did not write (:func:`~tuckertrt.inference.outputs.check_outputs`)."""
    plan = output_plan(inputs, out)
    check_outputs(plan, inputs, masks)
    return plan
