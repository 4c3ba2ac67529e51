"""DICOM outputs referenced to the input series: DICOM-SEG (highdicom), as ``TotalSegmentator --output_type
dicom_seg`` writes, and the checks and references it shares with the RT-STRUCT output (:mod:`.rtstruct`).

Segments are the classes present, numbered 1..N in class-id order and labelled with their TotalSegmentator names;
the SEG shares the input's Study Instance UID and Frame of Reference and references every input slice by its
SOP Instance UID (see :func:`source_references` for series whose anonymiser blanked these UIDs)."""
from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from tuckertrt.version import __version__
from tuckertrt.errors import MissingDependencyError, TuckerTRTError, UsageError
from tuckertrt.fileio import atomic_path
from tuckertrt.inference.io import CTImage, is_nifti

OUTPUT_TYPES = ("nifti", "dicom_seg", "dicom_rtstruct")
DICOM_FILE = "segmentations.dcm"  # TotalSegmentator's name for its DICOM output (DICOM-SEG or RT-STRUCT)
WRITER_PACKAGE = {"dicom_seg": "highdicom", "dicom_rtstruct": "contourpy"}  # installed by the `dicom` extra


def check_output_type(output_type: str) -> None:
    """Refuse an unknown output type."""
    if output_type not in OUTPUT_TYPES:
        raise UsageError(f"--output-type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")


def check_dicom_inputs(output_type: str, inputs: Iterable[Path]) -> None:
    """Refuse DICOM outputs for inputs that are not DICOM series (folders), or without their writer installed."""
    package = WRITER_PACKAGE.get(output_type)
    if package and importlib.util.find_spec(package) is None:
        raise MissingDependencyError(package, "dicom", f"--output-type {output_type}")
    if output_type != "nifti":
        files = [p for p in inputs if is_nifti(p) or Path(p).is_file()]
        if files:
            raise UsageError(f"--output-type {output_type} needs DICOM series input (a folder of slices); "
                             f"{files[0]} is a file")


def source_references(image: CTImage) -> list:
    """Copies of the input's slice headers fit to be referenced: a blank SOP Class/Instance UID is taken from the
    file meta (DICOM requires them equal); blank Study/Series UIDs (as some anonymisers leave them) are replaced
    by UIDs derived from the slices' SOP Instance UIDs, with a warning."""
    from pydicom.uid import generate_uid

    if not image.dicom:
        raise UsageError(f"{image.source} is not a DICOM series; DICOM outputs need DICOM input")
    refs = [copy.deepcopy(ds) for ds in image.dicom]
    for ds in refs:
        meta = getattr(ds, "file_meta", None)
        for attr, meta_attr in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(attr, "")) and meta is not None and str(meta.get(meta_attr, "")):
                setattr(ds, attr, meta.get(meta_attr))
        if not str(ds.get("SOPInstanceUID", "")):
            raise TuckerTRTError(f"a slice in {image.source} has no SOP Instance UID; it cannot be referenced")
    instances = [str(ds.SOPInstanceUID) for ds in refs]
    missing = [attr for attr in ("StudyInstanceUID", "SeriesInstanceUID")
               if not all(str(ds.get(attr, "")) for ds in refs)]
    derived = {attr: generate_uid(entropy_srcs=[attr, *instances]) for attr in missing}
    for ds in refs:
        for attr, uid in derived.items():
            setattr(ds, attr, uid)
    if derived:
        warnings.warn(f"{image.source} has no {' or '.join(derived)}; the DICOM output uses UIDs derived from its "
                      f"SOP Instance UIDs ({', '.join(derived.values())})", stacklevel=3)
    return refs


def matching_sources(labels: np.ndarray, image: CTImage) -> list:
    """:func:`source_references` of ``image``, checked to match ``labels`` (columns, rows, slices)."""
    sources = source_references(image)
    if labels.shape != (int(sources[0].Columns), int(sources[0].Rows), len(sources)):
        raise TuckerTRTError(f"labels {labels.shape} do not match the series {image.source}")
    return sources


def present_classes(labels: np.ndarray, class_names: dict[int, str]) -> list[int]:
    """The named classes (ids) found in ``labels``, in id order."""
    return [k for k in sorted(class_names) if k and np.any(labels == k)]


def dicom_seg(labels: np.ndarray, image: CTImage, class_names: dict[int, str]):
    """A highdicom ``Segmentation`` of ``labels`` (x, y, z in ``image``'s grid) over the input DICOM series."""
    try:
        import highdicom as hd
    except ImportError:
        raise MissingDependencyError("highdicom", "dicom", "--output-type dicom_seg") from None
    from pydicom.sr.codedict import codes

    sources = matching_sources(labels, image)
    present = present_classes(labels, class_names)
    segment_of = np.zeros(max(int(labels.max(initial=0)), max(class_names, default=0)) + 1, dtype=np.uint16)
    segment_of[present] = np.arange(1, len(present) + 1)
    frames = segment_of[labels].transpose(2, 1, 0)  # (slice, row, column), slices in the series' order
    algorithm = hd.AlgorithmIdentificationSequence(name="tuckertrt", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=class_names[k], segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.AnatomicalStructure,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for i, k in enumerate(present, start=1)]
    if not descriptions:
        raise TuckerTRTError(f"{image.case_name}: no class was found, so there is no segment to write to DICOM-SEG")
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="tuckertrt", manufacturer_model_name="tuckertrt",
        software_versions=__version__, device_serial_number="0", series_description="tuckertrt segmentation")


def write_dicom_seg(dest: str | os.PathLike, labels: np.ndarray, image: CTImage, class_names: dict[int, str]
                    ) -> Path:
    """Write the DICOM-SEG of ``labels`` atomically to ``dest``."""
    seg = dicom_seg(labels, image, class_names)
    with atomic_path(dest) as tmp:
        seg.save_as(tmp)
    return Path(dest)
