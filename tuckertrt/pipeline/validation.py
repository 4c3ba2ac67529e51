"""Segment validation CTs with the uncompressed and the compressed model on one backend and score the parity."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tuckertrt.inference.io import read_ct
from tuckertrt.inference.segment import Runner, segment_volume
from tuckertrt.models.presets import ts_total_classes
from tuckertrt.parity.metrics import compare_labels, relabel_by_name


def reference_in_model_ids(path: Path, shape: tuple[int, ...], model_labels: dict[int, str]) -> np.ndarray:
    """A reference label map (TotalSegmentator ids unless a ``.json`` sidecar names its labels) translated into
    the model's label ids by class name; classes the model does not predict become background."""
    from tuckertrt.errors import TuckerTRTError

    array = np.asarray(nib.load(str(path)).dataobj).astype(np.int32)
    if array.shape != shape:
        raise TuckerTRTError(f"reference {path.name} has shape {array.shape}, the CT {shape}")
    sidecar = Path(str(path).removesuffix(".gz").removesuffix(".nii") + ".json")
    names = ({int(k): v for k, v in json.loads(sidecar.read_text())["labels"].items()} if sidecar.exists()
             else ts_total_classes())
    return relabel_by_name(array, names, {k: v for k, v in model_labels.items() if k != 0})


@dataclass
class CaseResult:
    case: str
    source: str
    seconds: dict[str, float]
    parity: dict[str, Any]
    vs_reference: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "source": self.source, "seconds": self.seconds, "parity": self.parity,
                "vs_reference": self.vs_reference}


def validate_case(ct: Path, runners: dict[str, Runner], reference: Path | None, out_dir: Path,
                  tile_step: float, progress: bool = False) -> CaseResult:
    """Segment ``ct`` with each runner ("original", "compressed", ...), save the label maps under ``out_dir``,
    score every runner against "original" (parity) and against ``reference`` labels when given."""
    image = read_ct(ct)
    results = {name: segment_volume(image, runner, tile_step, progress) for name, runner in runners.items()}
    for name, result in results.items():
        result.save(out_dir / name / f"{image.case_name}.nii.gz")
    original = results["original"]
    names = original.class_names
    parity = {name: compare_labels(original.labels, r.labels, image.spacing, names).to_json()
              for name, r in results.items() if name != "original"}
    vs_reference = {}
    if reference is not None:
        ref = reference_in_model_ids(reference, original.labels.shape, runners["original"].spec.labels)
        vs_reference = {name: compare_labels(ref, r.labels, image.spacing, names).to_json()
                        for name, r in results.items()}
    seconds = {n: round(r.seconds, 3) for n, r in results.items()}
    return CaseResult(image.case_name, str(ct), seconds, parity, vs_reference)
