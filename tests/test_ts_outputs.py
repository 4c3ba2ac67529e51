"""TotalSegmentator-compatible outputs: statistics.json, DICOM-SEG, --roi-subset, the label table in the header."""
from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path
from xml.dom import minidom

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.conftest import blob_ct
from tests.test_inference import BONE_SPEC, bone_predictor
from tests.test_segment_cli import listing, run_cli, small_ct
from tuckertrt.errors import UsageError
from tuckertrt.inference import Runner, read_ct, segment_many
from tuckertrt.inference.io import CTImage, write_label_nifti
from tuckertrt.inference.label_header import read_label_names
from tuckertrt.inference.roi import check_roi_names, parse_roi_names, restrict_labels
from tuckertrt.inference.statistics import basic_statistics, statistics_json
from tuckertrt.inference.ts_outputs import TSOutputs

EXAMPLE_CT = Path(str(resources.files("tuckertrt.data") / "examples" / "example_ct.nii.gz"))
ROIS = ["liver", "spleen", "kidney_left", "vertebrae_L1", "aorta", "urinary_bladder"]


def ts_label_table(path: Path) -> dict[int, str]:
    """What TotalSegmentator's ``load_multilabel_nifti`` reads: the Caret XML of the FIRST header extension."""
    doc = minidom.parseString(nib.load(str(path)).header.extensions[0].get_content())
    return {int(node.getAttribute("Key")): "".join(c.data for c in node.childNodes)
            for node in doc.getElementsByTagName("Label")}


def touches_border(mask: np.ndarray) -> bool:
    return any(np.moveaxis(mask, axis, 0)[list(range(3)) + list(range(-3, 0))].any() for axis in range(3))


@pytest.fixture(scope="module")
def example_outputs(tmp_path_factory):
    """``segment example_ct --statistics --masks --roi-subset ...`` with the fixture model, once for the module."""
    out = tmp_path_factory.mktemp("example") / "out"
    from tuckertrt.cli import main

    try:
        main(["segment", str(EXAMPLE_CT), "-o", str(out), "--model", "fixture-3mm", "--statistics", "--masks",
              "--roi-subset", *ROIS[:3], "--roi-subset", ",".join(ROIS[3:])])
    except SystemExit as e:
        assert not e.code, e.code
    return out


def test_statistics_json_has_ts_keys_and_volumes_agree_with_an_independent_count(example_outputs):
    stats = json.loads((example_outputs / "example_ct" / "statistics.json").read_text())
    assert list(stats) == [n for n in json.loads((example_outputs / "example_ct.json").read_text())["labels"]
                           .values()]  # every kept class, in id order
    assert sorted(stats) == sorted(ROIS)
    assert all(list(v) == ["volume", "intensity"] for v in stats.values())
    seg = nib.load(example_outputs / "example_ct.nii.gz")
    ct = nib.load(EXAMPLE_CT)
    labels, hu = np.asarray(seg.dataobj), ct.get_fdata().astype(np.int16)
    names = read_label_names(example_outputs / "example_ct.nii.gz")
    voxel_mm3 = float(np.prod(nib.affines.voxel_sizes(ct.affine)))
    checked = 0
    for label, name in names.items():
        mask = labels == label
        if touches_border(mask) or not mask.any():
            assert stats[name] == {"volume": 0.0, "intensity": 0.0}, name
            continue
        assert stats[name]["volume"] == pytest.approx(mask.sum() * voxel_mm3, rel=1e-9), name
        assert stats[name]["intensity"] == pytest.approx(hu[mask].mean(), abs=1e-5), name
        checked += 1
    assert checked >= 3  # liver, spleen, kidney_left lie inside example_ct's field of view


def test_roi_subset_restricts_labels_masks_and_header(example_outputs):
    labels = np.asarray(nib.load(example_outputs / "example_ct.nii.gz").dataobj)
    names = ts_label_table(example_outputs / "example_ct.nii.gz")
    assert sorted(names.values()) == sorted(ROIS)
    assert set(np.unique(labels)) - {0} <= set(names)
    assert sorted(p.name for p in (example_outputs / "example_ct").iterdir() if p.name != ".tuckertrt") == \
        sorted([f"{n}.nii.gz" for n in ROIS] + ["statistics.json"])
    liver = [k for k, v in names.items() if v == "liver"][0]
    mask = np.asarray(nib.load(example_outputs / "example_ct" / "liver.nii.gz").dataobj)
    assert np.array_equal(mask.astype(bool), labels == liver) and mask.any()


def test_label_table_is_the_first_header_extension_and_reads_back(write_ct, tmp_path):
    image = read_ct(small_ct(write_ct))
    names = {1: "spleen", 5: "liver", 117: "costal_cartilages"}
    labels = np.zeros(image.array.shape, dtype=np.uint8)
    labels[2:5, 2:5, 2:5] = 5
    path = write_label_nifti(tmp_path / "seg.nii.gz", labels, image, names)
    assert nib.load(path).header.extensions[0].get_code() == 0  # as TotalSegmentator writes it
    assert ts_label_table(path) == names
    assert read_label_names(path) == names


def test_statistics_border_rule_and_include_incomplete():
    affine = np.array([[0.0, 1.5, 0.0, 4.0], [-0.8, 0.0, 0.0, 2.0], [0.0, 0.0, 2.5, -9.0], [0, 0, 0, 1]])
    ct = np.full((30, 20, 16), -1000.0, dtype=np.float32)
    ct[10:20, 8:12, 5:10] = 55.7  # truncated to 55 HU, as TotalSegmentator reads the CT as int16
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[10:20, 8:12, 5:10] = 2
    labels[0:4, 0:3, 0:2] = 3  # in the corner
    image = CTImage(ct, affine, Path("synthetic.nii.gz"))
    names = {1: "spleen", 2: "liver", 3: "stomach"}
    stats = statistics_json(basic_statistics(labels, image, names))
    assert stats == {"spleen": {"volume": 0.0, "intensity": 0.0},
                     "liver": {"volume": pytest.approx(200 * 1.5 * 0.8 * 2.5), "intensity": 55.0},
                     "stomach": {"volume": 0.0, "intensity": 0.0}}
    incomplete = basic_statistics(labels, image, names, include_incomplete=True)["stomach"]
    assert incomplete.at_border and incomplete.volume == pytest.approx(24 * 3.0) and incomplete.intensity == -1000.0


def test_roi_names_parse_and_unknown_names_are_usage_errors(write_ct, tmp_path, capsys):
    assert parse_roi_names(["liver spleen", "kidney_left,kidney_right", "liver"]) == \
        ("liver", "spleen", "kidney_left", "kidney_right")
    with pytest.raises(UsageError, match="did you mean liver"):
        check_roi_names(["livr"], ["spleen", "liver"])
    labels = np.array([[[0, 1, 2, 3]]], dtype=np.uint8)
    kept, names = restrict_labels(labels, {1: "spleen", 2: "liver", 3: "aorta"}, ["aorta", "spleen"])
    assert kept.tolist() == [[[0, 1, 0, 3]]] and names == {1: "spleen", 3: "aorta"}
    ct = small_ct(write_ct)
    code, _, err = run_cli([ct, "-o", tmp_path / "out", "--model", "fixture-3mm", "--roi-subset", "liver",
                            "kidny_left", "--statistics"], capsys)
    assert code == 2 and err.count("\n") == 1 and "'kidny_left' (did you mean kidney_left" in err, err
    assert listing(tmp_path) == ["ct.nii.gz"]


def test_dicom_outputs_need_dicom_input(write_ct, tmp_path, capsys):
    ct = small_ct(write_ct)
    for output_type in ("dicom_seg", "dicom_rtstruct"):
        code, _, err = run_cli([ct, "-o", tmp_path / "out", "--model", "fixture-3mm", "--output-type",
                                output_type], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"--output-type {output_type} needs DICOM series input (a folder of slices); {ct} is a file" in err
    assert listing(tmp_path) == ["ct.nii.gz"]


def write_dicom_series(folder: Path, ct: np.ndarray, spacing: float) -> dict[str, object]:
    """``ct`` (columns, rows, slices) as an uncompressed axial CT series; returns its UIDs."""
    folder.mkdir(parents=True)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid(), "instances": []}
    for k in range(ct.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids["study"], uids["series"], \
            uids["frame"]
        ds.Modality, ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "CT", "Test^Case", "42", "", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = \
            "20260101", "120000", "1", "", ""
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-20.0, -30.0, 100.0 + spacing * k]
        ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], spacing
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(ct[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
        uids["instances"].append(ds.SOPInstanceUID)
    return uids


def check_seg_reproduces(seg_path: Path, labels: np.ndarray, names: dict[int, str], instances: list[str]) -> None:
    """The SEG's frames, read back per source slice, are ``labels`` (with segments mapped to class ids by label)."""
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    by_number = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    present = {names[k] for k in np.unique(labels) if k}
    assert set(by_number.values()) == present
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=instances, combine_segments=True)
    class_of = {n: [k for k, v in names.items() if v == label][0] for n, label in by_number.items()}
    lookup = np.zeros(max(by_number) + 1, dtype=np.int64)
    lookup[list(class_of)] = list(class_of.values())
    assert np.array_equal(lookup[frames], labels.transpose(2, 1, 0))


def test_dicom_seg_references_the_input_series_and_reproduces_the_labels(tmp_path):
    ct = blob_ct((36, 28, 16), (18.0, 14.0, 8.0), 4.0)
    uids = write_dicom_series(tmp_path / "series", ct, 2.0)
    result = segment_many([tmp_path / "series"], tmp_path / "out", Runner(BONE_SPEC, bone_predictor),
                          keep_going=False, ts=TSOutputs(output_type="dicom_seg", statistics=True))
    seg_path = tmp_path / "out" / "series" / "segmentations.dcm"
    assert seg_path.is_file() and seg_path.parent in result.written["series"]
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.StudyInstanceUID == uids["study"] and ds.FrameOfReferenceUID == uids["frame"]
    assert ds.SeriesInstanceUID != uids["series"] and ds.PatientID == "42"
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == uids["series"]
    assert sorted(i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence) == \
        sorted(uids["instances"])
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["bone"]
    labels = np.asarray(nib.load(tmp_path / "out" / "series.nii.gz").dataobj)
    assert (labels == 1).sum() > 100
    check_seg_reproduces(seg_path, labels, {1: "bone"}, uids["instances"])
    # each frame lies on its source slice
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = frame.PlanePositionSequence[0].ImagePositionPatient[2]
        assert z == pytest.approx(100.0 + 2.0 * uids["instances"].index(source))
    stats = json.loads((tmp_path / "out" / "series" / "statistics.json").read_text())
    assert stats["bone"]["volume"] == pytest.approx((labels == 1).sum() * 8.0)


def test_dicom_seg_for_the_example_series(shared_data, tmp_path, capsys):
    """The real, JPEG-2000, anonymised example series (blank Study/Series UIDs) with the fixture model."""
    folder = shared_data / "example_ct_dicom"
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli([folder, "-o", out, "--model", "fixture-3mm", "--output-type", "dicom_seg"], capsys)
    assert code == 0, err
    assert any("has no StudyInstanceUID or SeriesInstanceUID" in str(w.message) for w in caught)
    headers = {f.name: pydicom.dcmread(f, stop_before_pixels=True) for f in folder.iterdir()}
    ds = pydicom.dcmread(out / "example_ct_dicom" / "segmentations.dcm")
    first = next(iter(headers.values()))
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID and ds.StudyInstanceUID
    (referenced,) = ds.ReferencedSeriesSequence
    assert sorted(i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence) == \
        sorted(h.file_meta.MediaStorageSOPInstanceUID for h in headers.values())
    image = read_ct(folder)
    instances = [str(h.file_meta.MediaStorageSOPInstanceUID) for h in image.dicom]
    labels = np.asarray(nib.load(out / "example_ct_dicom.nii.gz").dataobj)
    names = read_label_names(out / "example_ct_dicom.nii.gz")
    assert len(ds.SegmentSequence) == len(np.unique(labels)) - 1 > 10
    check_seg_reproduces(out / "example_ct_dicom" / "segmentations.dcm", labels, names, instances)


def test_dicom_output_is_never_written_into_the_input_series(tmp_path):
    write_dicom_series(tmp_path / "series", blob_ct((20, 20, 8), (10.0, 10.0, 4.0), 3.0), 2.0)
    before = listing(tmp_path)
    with pytest.raises(UsageError, match="would overwrite the input|inside that input folder"):
        segment_many([tmp_path / "series"], tmp_path, Runner(BONE_SPEC, bone_predictor),
                     ts=TSOutputs(output_type="dicom_seg"))
    assert listing(tmp_path) == before
