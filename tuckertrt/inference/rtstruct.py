"""DICOM RT Structure Set output, as ``TotalSegmentator --output_type dicom_rtstruct`` writes: one ROI per class
present, named with its TotalSegmentator name, outlined slice by slice on the input series.

Outlines are marching-squares contours (contourpy) at half a pixel from the mask's pixel centres, so a reader that
fills each contour's polygon at the pixel centres of its slice gets the mask back, holes as separate contours as
TotalSegmentator's writer (rt-utils) emits them. The structure set shares the input's Study Instance UID, references
its series, Frame of Reference and every slice that carries a contour by SOP Instance UID (see
:func:`~tuckertrt.inference.dicom_outputs.source_references` for series whose anonymiser blanked these UIDs)."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from tuckertrt.errors import MissingDependencyError, TuckerTRTError
from tuckertrt.fileio import atomic_path
from tuckertrt.inference.dicom_outputs import matching_sources, present_classes
from tuckertrt.inference.io import CTImage
from tuckertrt.version import __version__

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the study reference every RT-STRUCT writer uses
# Copied from the input when present, else left empty (type 2 in the Patient and General Study modules).
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                     "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
COPIED_IF_PRESENT = ("SpecificCharacterSet", "StudyDescription", "PatientAge", "PatientSize", "PatientWeight")
# Outlines pass a quarter pixel outside the centres of the mask's edge pixels (marching squares on the 0/1 mask at
# this level): readers that fill a polygon with the pixels it touches after rounding its vertices to pixel centres
# (rt-utils, as TotalSegmentator users load RT-STRUCTs) and readers that keep the pixel centres inside it both get the
# mask back.
LEVEL = 0.75


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines, as (column, row) pixel coordinates, of the ``True`` pixels of ``mask`` (column, row),
    holes included, with the points that lie on a straight run dropped."""
    import contourpy

    plane = np.pad(mask.T.astype(np.float32), 1)  # (row, column): contourpy's (y, x)
    outlines = []
    for line in contourpy.contour_generator(z=plane, line_type=contourpy.LineType.Separate).lines(LEVEL):
        points = (line[:-1] if np.array_equal(line[0], line[-1]) else line) - 1.0
        before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
        (dx0, dy0), (dx1, dy1) = (points - before).T, (after - points).T
        turn = dx0 * dy1 - dy0 * dx1
        outlines.append(points[np.abs(turn) > 1e-9])
    return outlines


def patient_points(points: np.ndarray, source) -> np.ndarray:
    """(column, row) pixel coordinates on the slice ``source`` as patient coordinates (mm), one point per row."""
    position = np.asarray(source.ImagePositionPatient, dtype=np.float64)
    orientation = np.asarray(source.ImageOrientationPatient, dtype=np.float64)
    row_spacing, column_spacing = (float(s) for s in source.PixelSpacing)
    return (position + np.outer(points[:, 0] * column_spacing, orientation[:3])
            + np.outer(points[:, 1] * row_spacing, orientation[3:]))


def class_contours(labels: np.ndarray, present: list[int], sources: list) -> dict[int, list[tuple[int, np.ndarray]]]:
    """For each class of ``present``: (slice index, patient points) of every outline on every slice."""
    contours = {k: [] for k in present}
    for index, source in enumerate(sources):
        plane = labels[:, :, index]
        boxes = ndimage.find_objects(plane, max_label=max(present))
        for k in present:
            box = boxes[k - 1]
            if box is None:
                continue
            offset = np.array([box[0].start, box[1].start], dtype=np.float64)
            contours[k] += [(index, patient_points(outline + offset, source))
                            for outline in slice_contours(plane[box] == k)]
    return contours


def _item(**attributes):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _image_reference(source):
    return _item(ReferencedSOPClassUID=source.SOPClassUID, ReferencedSOPInstanceUID=source.SOPInstanceUID)


def _color(number: int) -> list[int]:
    from matplotlib import colormaps

    return [round(255 * c) for c in colormaps["tab20"].colors[(number - 1) % 20]]


def rtstruct(labels: np.ndarray, image: CTImage, class_names: dict[int, str]):
    """A pydicom RT Structure Set of ``labels`` (x, y, z in ``image``'s grid) over the input DICOM series."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = matching_sources(labels, image)
    present = present_classes(labels, class_names)
    if not present:
        raise TuckerTRTError(f"{image.case_name}: no class was found, so there is no ROI to write to RT-STRUCT")
    first = sources[0]
    frame = str(first.get("FrameOfReferenceUID", ""))
    if not frame:
        raise TuckerTRTError(f"{image.source} has no Frame of Reference UID; an RT-STRUCT cannot be placed on it")
    now = datetime.datetime.now()
    ds = _item(SOPClassUID=RTSTRUCT_STORAGE, SOPInstanceUID=generate_uid(), Modality="RTSTRUCT",
               **{k: first.get(k, "") for k in PATIENT_AND_STUDY},
               **{k: first.get(k) for k in COPIED_IF_PRESENT if k in first},
               SeriesInstanceUID=generate_uid(), SeriesNumber=901, SeriesDescription="tuckertrt segmentation",
               OperatorsName="", InstanceNumber=1, Manufacturer="tuckertrt", ManufacturerModelName="tuckertrt",
               SoftwareVersions=__version__, InstanceCreationDate=now.strftime("%Y%m%d"),
               InstanceCreationTime=now.strftime("%H%M%S"), StructureSetLabel="tuckertrt",
               StructureSetDate=now.strftime("%Y%m%d"), StructureSetTime=now.strftime("%H%M%S"),
               ApprovalStatus="UNAPPROVED")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = RTSTRUCT_STORAGE, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    series = _item(SeriesInstanceUID=first.SeriesInstanceUID,
                   ContourImageSequence=Sequence([_image_reference(s) for s in sources]))
    study = _item(ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT, ReferencedSOPInstanceUID=first.StudyInstanceUID,
                  RTReferencedSeriesSequence=Sequence([series]))
    ds.ReferencedFrameOfReferenceSequence = Sequence([_item(FrameOfReferenceUID=frame,
                                                            RTReferencedStudySequence=Sequence([study]))])
    contours = class_contours(labels, present, sources)
    numbers = range(1, len(present) + 1)
    ds.StructureSetROISequence = Sequence([
        _item(ROINumber=n, ReferencedFrameOfReferenceUID=frame, ROIName=class_names[k],
              ROIGenerationAlgorithm="AUTOMATIC") for n, k in zip(numbers, present)])
    ds.ROIContourSequence = Sequence([
        _item(ReferencedROINumber=n, ROIDisplayColor=_color(n), ContourSequence=Sequence([
            _item(ContourImageSequence=Sequence([_image_reference(sources[index])]),
                  ContourGeometricType="CLOSED_PLANAR", NumberOfContourPoints=len(points),
                  ContourData=[round(float(v), 3) for v in points.ravel()])
            for index, points in contours[k]])) for n, k in zip(numbers, present)])
    ds.RTROIObservationsSequence = Sequence([
        _item(ObservationNumber=n, ReferencedROINumber=n, RTROIInterpretedType="ORGAN", ROIInterpreter="")
        for n in numbers])
    return ds


def write_rtstruct(dest: str | os.PathLike, labels: np.ndarray, image: CTImage, class_names: dict[int, str]
                   ) -> Path:
    """Write the RT Structure Set of ``labels`` atomically to ``dest``."""
    try:
        import contourpy  # noqa: F401
    except ImportError:
        raise MissingDependencyError("contourpy", "dicom", "--output-type dicom_rtstruct") from None
    from pydicom import dcmwrite

    ds = rtstruct(labels, image, class_names)
    with atomic_path(dest) as tmp:
        dcmwrite(tmp, ds, enforce_file_format=True)
    return Path(dest)
