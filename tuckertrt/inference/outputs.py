"""Where segmentation results go, a guard against overwriting inputs, and atomic writing of a result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import atomic_dir, write_json_atomic
from tuckertrt.inference.io import is_nifti, strip_nifti_suffix, write_label_nifti

if TYPE_CHECKING:
    from tuckertrt.inference.segment import SegmentationResult
    from tuckertrt.inference.ts_outputs import TSOutputs


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

    def planned_files(self, class_names: Iterable[str], masks: bool, case_files: Sequence[str] = ()) -> list[Path]:
        files = [self.labels, self.sidecar] + [self.masks_dir / name for name in case_files]
        return files + ([self.masks_dir / f"{name}.nii.gz" for name in class_names] if masks else [])


def case_name(source: Path) -> str:
    return strip_nifti_suffix(source.name)


def case_outputs(source: Path, out_dir: Path) -> CaseOutputs:
    return CaseOutputs(case_name(source), out_dir / f"{case_name(source)}.nii.gz")


def collect_inputs(path: str | Path) -> list[Path]:
    """A NIfTI file or a DICOM folder is one case; a folder holding NIfTI files is a batch of them (plus any
    sub-folders, taken as DICOM series)."""
    path = Path(path)
    if not path.exists():
        raise TuckerTRTError(f"input not found: {path}")
    if path.is_file():
        return [path]
    niftis = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p))
    if not niftis:
        return [path]
    return niftis + sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_not_overwriting_inputs(outputs: Iterable[CaseOutputs], inputs: Iterable[Path],
                                 class_names: Iterable[str], masks: bool, case_files: Sequence[str] = ()) -> None:
    """Refuse outputs that would replace an input file or land inside an input (DICOM) folder."""
    names = list(class_names)
    input_files, input_dirs = set(), set()
    for p in inputs:
        resolved = Path(p).resolve()
        (input_dirs if resolved.is_dir() else input_files).add(resolved)
    for out in outputs:
        for f in out.planned_files(names, masks, case_files):
            target = f.resolve()
            if target in input_files or target in input_dirs:
                raise UsageError(f"output {f} would overwrite the input {target}; choose another output path")
            if any(d in target.parents for d in input_dirs):
                raise UsageError(f"output {f} would be written into the input DICOM folder {target.parent}")


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
    TotalSegmentator-style outputs ``ts`` asks for (statistics.json, DICOM) into the case folder."""
    out = CaseOutputs(result.case, labels_path)
    written = [write_label_nifti(labels_path, result.labels, result.image, result.class_names)]
    if masks:
        with atomic_dir(out.masks_dir) as tmp:
            for label, name in result.class_names.items():
                mask = (result.labels == label).astype(np.uint8)
                write_label_nifti(tmp / f"{name}.nii.gz", mask, result.image)
        written.append(out.masks_dir)
    extra = ts.write(result, out.masks_dir) if ts else []
    written += extra
    summary = {**result.summary(), "output": str(labels_path), "masks": str(out.masks_dir) if masks else None,
               **({"case_files": [str(p) for p in extra]} if extra else {})}
    written.append(write_json_atomic(out.sidecar, summary))
    return written
