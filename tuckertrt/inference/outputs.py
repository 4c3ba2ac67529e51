"""Where segmentation results go, the pre-flight checks that keep inputs and foreign files safe, and the
publishing of one case's outputs (labels, sidecar, masks) as a set."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import (Problems, check_replaceable, check_replaceable_file, check_separate, check_writable,
                              discard_temporary, make_staging_dir, publish, safe_name, write_json_atomic)
from tuckertrt.inference.io import is_nifti, strip_nifti_suffix, write_label_nifti

if TYPE_CHECKING:
    from tuckertrt.inference.segment import SegmentationResult
    from tuckertrt.inference.ts_outputs import TSOutputs

SIDECAR_FORMAT = "tuckertrt-segmentation/1"
SUMMARY_NAME = "segment_summary.json"
SUMMARY_FORMAT = "tuckertrt-segment-summary/1"


@dataclass(frozen=True)
class CaseOutputs:
    """The files of one case: ``<stem>.nii.gz`` (multilabel), ``<stem>.json`` (sidecar), ``<stem>/`` (masks)."""

    case: str
    labels: Path

    @property
    def stem(self) -> str:
        return strip_nifti_suffix(self.labels.name)

    @property
    def sidecar(self) -> Path:
        return self.labels.with_name(f"{self.stem}.json")

    @property
    def masks_dir(self) -> Path:
        return self.labels.with_name(self.stem)

    def paths(self, masks: bool, case_files: Sequence[str] = ()) -> list[Path]:
        """What a case writes: labels, sidecar and, with masks or case files, the case folder."""
        return [self.labels, self.sidecar] + ([self.masks_dir] if masks or case_files else [])

    def written_before(self) -> bool:
        """Whether the labels and sidecar present now were written by tuckertrt (its sidecar says so)."""
        try:
            sidecar = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(sidecar, dict) and (sidecar.get("format") == SIDECAR_FORMAT
                                              or {"runners", "tiles", "labels"} <= set(sidecar))


def mask_file_names(class_names: dict[int, str]) -> dict[int, str]:
    """``<class>.nii.gz`` per label with the name reduced to a safe file-name alphabet (unique: a clash gets the
    label id appended)."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for label, name in class_names.items():
        base = safe_name(name, fallback=f"label_{label}")
        if base.lower() in used:
            base = f"{base}_{label}"
        used.add(base.lower())
        names[label] = f"{base}.nii.gz"
    return names


def case_name(source: Path) -> str:
    return strip_nifti_suffix(source.name)


def case_outputs(source: Path, out_dir: Path) -> CaseOutputs:
    return CaseOutputs(case_name(source), out_dir / f"{safe_name(case_name(source), 'case')}.nii.gz")


def collect_inputs(path: str | Path) -> list[Path]:
    """A NIfTI file or a DICOM folder is one case; a folder holding NIfTI files is a batch of them (plus any
    sub-folders, taken as DICOM series)."""
    path = Path(path)
    if not path.exists():
        raise TuckerTRTError(f"input not found: {path}")
    if not path.is_file() and not path.is_dir():
        raise TuckerTRTError(f"input {path} is not a regular file or folder")
    if path.is_file():
        return [path]
    try:
        entries = sorted(path.iterdir())
    except OSError as e:
        raise TuckerTRTError(f"cannot list the input folder {path}: {e.strerror or e}") from None
    niftis = [p for p in entries if p.is_file() and is_nifti(p)]
    if not niftis:
        return [path]
    return niftis + [p for p in entries if p.is_dir() and not p.name.startswith(".")]


def check_outputs(outputs: Iterable[CaseOutputs], inputs: Iterable[Path], masks: bool,
                  summary: Path | None = None, case_files: Sequence[str] = ()) -> None:
    """Pre-flight: every output lies outside every input, replaces only earlier tuckertrt outputs and can be
    written. All problems are reported together."""
    outputs, inputs = list(outputs), list(inputs)
    problems = Problems()
    paths = [p for out in outputs for p in out.paths(masks, case_files)] + ([summary] if summary else [])
    problems.check(check_separate, paths, inputs)
    for out in outputs:
        ours = out.written_before()
        problems.check(check_replaceable_file, out.labels, ours)
        problems.check(check_replaceable_file, out.sidecar, ours)
        if masks or case_files:
            problems.check(check_replaceable, out.masks_dir)
    if summary is not None:
        problems.check(check_replaceable_file, summary, _is_summary(summary))
    if outputs:
        problems.check(check_writable, outputs[0].labels)
    problems.raise_if_any()


def output_plan(inputs: list[Path], out: Path) -> list[CaseOutputs]:
    """``out`` is the multilabel file for a single input named ``*.nii(.gz)``, otherwise a folder of cases."""
    if is_nifti(out):
        if len(inputs) != 1:
            raise UsageError(f"{len(inputs)} input cases need an output folder, not the file {out}")
        return [CaseOutputs(case_name(inputs[0]), out)]
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder (name a .nii.gz file for one case)")
    cases = [case_outputs(p, out) for p in inputs]
    seen: dict[Path, Path] = {}
    for p, c in zip(inputs, cases):
        if c.labels in seen:
            raise UsageError(f"inputs {seen[c.labels]} and {p} would both be written to {c.labels}")
        seen[c.labels] = p
    return cases


def save_result(result: "SegmentationResult", labels_path: Path, masks: bool, ts: "TSOutputs | None" = None
                ) -> list[Path]:
    """Write the multilabel NIfTI (+ names in a header extension), the JSON sidecar, optional masks and the
    TotalSegmentator-style outputs ``ts`` asks for (statistics.json, DICOM, in the case folder) as one set: staged
    beside the destination, then published together (an interrupt leaves the previous set)."""
    out = CaseOutputs(result.case, labels_path)
    ours = out.written_before()
    check_replaceable_file(out.labels, ours)
    check_replaceable_file(out.sidecar, ours)
    case_folder = masks or bool(ts and ts.case_files())
    if case_folder:
        check_replaceable(out.masks_dir)
    staging = make_staging_dir(labels_path)
    try:
        staged_labels = "labels.nii.gz" if labels_path.name.lower().endswith(".gz") else "labels.nii"
        write_label_nifti(staging / staged_labels, result.labels, result.image, result.class_names)
        if case_folder:
            (staging / "masks").mkdir()
        if masks:
            for label, file_name in mask_file_names(result.class_names).items():
                mask = (result.labels == label).astype(np.uint8)
                write_label_nifti(staging / "masks" / file_name, mask, result.image)
        extra = [out.masks_dir / p.name for p in ts.write(result, staging / "masks")] if ts else []
        summary = {"format": SIDECAR_FORMAT, **result.summary(), "output": str(labels_path),
                   "masks": str(out.masks_dir) if masks else None,
                   **({"case_files": [str(p) for p in extra]} if extra else {})}
        write_json_atomic(staging / "sidecar.json", summary)
        moves = {**({"masks": out.masks_dir} if case_folder else {}), staged_labels: out.labels,
                 "sidecar.json": out.sidecar}
        publish(staging, moves)
    except BaseException as e:
        discard_temporary(staging, labels_path, e)
        raise
    return [out.labels] + ([out.masks_dir] if case_folder else []) + [out.sidecar]


def _is_summary(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_summary(path: Path, cases: list[dict[str, Any]]) -> Path:
    """The cohort's per-case status (``ok``/``failed`` with the reason), rewritten atomically after each case."""
    failed = sum(c["status"] == "failed" for c in cases)
    return write_json_atomic(path, {"format": SUMMARY_FORMAT, "cases": cases, "total": len(cases),
                                    "ok": len(cases) - failed, "failed": failed})
