"""TotalSegmentator-compatible outputs of a case: ``--roi-subset``, ``--statistics``, ``--output-type``.

They go into the case folder ``<stem>/`` beside ``<stem>.nii.gz`` (the folder that also holds the per-class masks,
as TotalSegmentator's output folder does): ``statistics.json`` and ``segmentations.dcm`` (the DICOM-SEG or the
RT-STRUCT, as TotalSegmentator names either)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tuckertrt.inference.dicom_outputs import DICOM_FILE, check_dicom_inputs, check_output_type, write_dicom_seg
from tuckertrt.inference.roi import check_roi_names, restrict_labels
from tuckertrt.inference.rtstruct import write_rtstruct
from tuckertrt.inference.statistics import STATISTICS_FILE, basic_statistics, write_statistics

if TYPE_CHECKING:
    from tuckertrt.inference.segment import SegmentationResult


@dataclass(frozen=True)
class TSOutputs:
    """Which TotalSegmentator-style outputs to write, and for which classes (``roi_subset``: all when empty)."""

    statistics: bool = False
    output_type: str = "nifti"
    roi_subset: tuple[str, ...] = ()
    stats_include_incomplete: bool = False

    def __post_init__(self) -> None:
        check_output_type(self.output_type)

    def case_files(self) -> list[str]:
        """Names of the files written into each case folder."""
        return ([STATISTICS_FILE] if self.statistics else []) + ([DICOM_FILE] if self.output_type != "nifti" else [])

    def check(self, inputs: Iterable[Path], class_names: Iterable[str] | None) -> None:
        """Usage errors before anything runs: a DICOM output for non-DICOM input, an unknown ROI name (when the
        model's ``class_names`` are known)."""
        check_dicom_inputs(self.output_type, inputs)
        if self.roi_subset and class_names is not None:
            check_roi_names(self.roi_subset, class_names)

    def restrict(self, result: "SegmentationResult") -> "SegmentationResult":
        """``result`` with only the ``roi_subset`` classes (``result`` itself when no subset is asked for)."""
        if not self.roi_subset:
            return result
        labels, names = restrict_labels(result.labels, result.class_names, self.roi_subset)
        return replace(result, labels=labels, class_names=names)

    def write(self, result: "SegmentationResult", case_dir: Path) -> list[Path]:
        """Write statistics.json and the DICOM output of ``result`` into ``case_dir``; the paths written."""
        written = []
        if self.statistics:
            stats = basic_statistics(result.labels, result.image, result.class_names, self.stats_include_incomplete)
            written.append(write_statistics(case_dir / STATISTICS_FILE, stats))
        if self.output_type == "dicom_seg":
            written.append(write_dicom_seg(case_dir / DICOM_FILE, result.labels, result.image, result.class_names))
        elif self.output_type == "dicom_rtstruct":
            written.append(write_rtstruct(case_dir / DICOM_FILE, result.labels, result.image, result.class_names))
        return written
