"""``segment --output-type dicom_rtstruct``: an RT Structure Set referenced to the input series, read back with
pydicom, with rt-utils (what TotalSegmentator users load RT-STRUCTs with) and with a point-in-polygon reader."""
from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as PolygonPath
from rt_utils import RTStruct, RTStructBuilder

from tests.test_segment_cli import listing, run_cli
from tests.test_ts_outputs import write_dicom_series
from tuckertrt.data import example_dicom
from tuckertrt.inference.dicom_outputs import source_references
from tuckertrt.inference.io import read_ct
from tuckertrt.inference.label_header import read_label_names
from tuckertrt.inference.rtstruct import write_rtstruct

SUBSET = ["liver", "spleen", "hip_left", "aorta"]


def segment_example(tmp_path, capsys, *options: str):
    """``segment`` the bundled example DICOM series with the fixture model into ``tmp_path/out``: (RT-STRUCT dataset,
    labels, {id: name}) of the run."""
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has no StudyInstanceUID or SeriesInstanceUID")
        code, _, err = run_cli([example_dicom(), "-o", out, "--model", "fixture-3mm", "--output-type",
                                "dicom_rtstruct", *options], capsys)
    assert code == 0, err
    nifti = out / "example_ct_dicom.nii.gz"
    return (pydicom.dcmread(out / "example_ct_dicom" / "segmentations.dcm"), np.asarray(nib.load(nifti).dataobj),
            read_label_names(nifti))


def present_names(labels: np.ndarray, names: dict[int, str]) -> list[str]:
    return [names[k] for k in sorted(names) if k and (labels == k).any()]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def contour_uids(ds) -> list[str]:
    return [str(image.ReferencedSOPInstanceUID) for roi in ds.ROIContourSequence for contour in roi.ContourSequence
            for image in contour.ContourImageSequence]


def centres_inside(ds, name: str, sources: list, shape: tuple[int, int, int]) -> np.ndarray:
    """The (column, row, slice) pixels whose centres lie inside an odd number of ``name``'s contours."""
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == name)
    (roi,) = [r for r in ds.ROIContourSequence if r.ReferencedROINumber == number]
    index = {str(s.SOPInstanceUID): i for i, s in enumerate(sources)}
    columns, rows = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = np.stack([columns.ravel(), rows.ravel()], axis=1)
    mask = np.zeros(shape, dtype=bool)
    for contour in roi.ContourSequence:
        k = index[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
        source = sources[k]
        offset = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3) - np.asarray(source.ImagePositionPatient)
        orientation = np.asarray(source.ImageOrientationPatient, dtype=float)
        pixels = np.stack([offset @ orientation[:3] / float(source.PixelSpacing[1]),
                           offset @ orientation[3:] / float(source.PixelSpacing[0])], axis=1)
        mask[:, :, k] ^= PolygonPath(pixels).contains_points(centres).reshape(shape[:2])
    return mask


def test_rtstruct_for_the_example_series(tmp_path, capsys):
    """The real, JPEG-2000, anonymised example series (blank Study/Series/SOP Instance UIDs in the slices)."""
    ds, labels, names = segment_example(tmp_path, capsys)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in example_dicom().iterdir()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sources = source_references(read_ct(example_dicom()))  # the UIDs derived for the blank ones
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    (study,) = frame.RTReferencedStudySequence
    (series,) = study.RTReferencedSeriesSequence
    assert study.ReferencedSOPInstanceUID == ds.StudyInstanceUID
    assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID != ds.SeriesInstanceUID
    inputs = {str(h.file_meta.MediaStorageSOPInstanceUID) for h in headers}
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence} == inputs
    assert set(contour_uids(ds)) <= inputs and len(contour_uids(ds)) > len(names) // 2
    z_of = {str(h.file_meta.MediaStorageSOPInstanceUID): float(h.ImagePositionPatient[2]) for h in headers}
    for roi in ds.ROIContourSequence:  # each contour lies on the (axial) slice it references
        for contour in roi.ContourSequence:
            z = np.asarray(contour.ContourData, dtype=float)[2::3]
            assert np.all(z == z_of[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)])
    assert [r.ROIName for r in ds.StructureSetROISequence] == present_names(labels, names)
    assert len(ds.StructureSetROISequence) > 10
    # rt-utils' reader over the slices as the RT-STRUCT references them
    rt = RTStruct(sorted(sources, key=lambda s: float(s.ImagePositionPatient[2])), ds)
    assert [str(s.SOPInstanceUID) for s in rt.series_data] == [str(s.SOPInstanceUID) for s in sources]
    assert rt.get_roi_names() == present_names(labels, names)
    checked = 0
    for k, name in names.items():
        mask = labels == k
        if mask.sum() >= 100:
            assert dice(rt.get_roi_mask_by_name(name).transpose(1, 0, 2), mask) >= 0.99, name
            checked += 1
    assert checked >= 10


def test_roi_subset_restricts_the_rois(tmp_path, capsys):
    ds, labels, names = segment_example(tmp_path, capsys, "--roi-subset", *SUBSET)
    rois = [r.ROIName for r in ds.StructureSetROISequence]
    assert rois == present_names(labels, names) and set(rois) <= set(SUBSET)
    assert {"liver", "hip_left"} <= set(rois)  # both lie in the example's field of view
    assert len(ds.ROIContourSequence) == len(ds.RTROIObservationsSequence) == len(rois)


def test_outlines_read_back_exactly_with_holes_and_single_pixels(tmp_path):
    """A series with real UIDs, loaded as TotalSegmentator users load RT-STRUCTs (rt-utils' create_from), and by
    a reader that keeps the pixel centres inside each slice's contours (even-odd, so holes stay holes)."""
    uids = write_dicom_series(tmp_path / "series", np.full((24, 24, 6), -1000.0), 1.5)
    image = read_ct(tmp_path / "series")
    labels = np.zeros((24, 24, 6), dtype=np.uint8)
    labels[4:14, 3:12, 1:4] = 3
    labels[7:10, 6:9, 2] = 0  # a hole
    labels[16, 18, 0] = 5  # a single pixel
    labels[15:20, 15:22, 3:6] = 5
    labels[17, 14, 4] = 5  # a pixel on an edge
    labels[16, 21, 5] = 0  # a notch in a corner
    path = write_rtstruct(tmp_path / "out" / "segmentations.dcm", labels, image,
                          {3: "liver", 5: "spleen", 7: "aorta"})
    assert listing(tmp_path / "out") == ["segmentations.dcm"]
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == uids["study"] and ds.PatientID == "42"
    assert ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID == uids["series"]
    assert set(contour_uids(ds)) == {uids["instances"][k] for k in range(6) if labels[:, :, k].any()}
    rt = RTStructBuilder.create_from(str(tmp_path / "series"), str(path))
    assert rt.get_roi_names() == ["liver", "spleen"]  # aorta is absent
    for k, name in ((3, "liver"), (5, "spleen")):
        assert np.array_equal(rt.get_roi_mask_by_name(name).transpose(1, 0, 2), labels == k), name
        assert np.array_equal(centres_inside(ds, name, list(image.dicom), labels.shape), labels == k), name
