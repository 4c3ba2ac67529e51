"""Training data: labelled datasets (nnU-Net v2 raw or TotalSegmentator-style), unlabelled CTs, and their
preprocessing into network-grid :class:`Volume` s with exactly the inference preprocessing.

Labels are matched to the model's classes by name, so a dataset may use other ids or hold other classes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.inference.io import CTImage, is_nifti, read_ct, read_nifti, strip_nifti_suffix
from tuckertrt.inference.preprocess import normalize_ct, to_network_grid
from tuckertrt.models.spec import ModelSpec
from tuckertrt.training.sampling import Volume

TS_CT_NAME = "ct.nii.gz"
TS_MULTILABEL_NAMES = ("segmentations.nii.gz", "seg.nii.gz", "label.nii.gz", "labels.nii.gz")


@dataclass(frozen=True)
class LabelledCase:
    """A CT and its labels: a multilabel NIfTI (``names``: id → class) or a folder of binary masks."""

    name: str
    image: Path
    labels: Path
    names: dict[int, str] | None = None


def find_labelled_cases(dataset: Path) -> list[LabelledCase]:
    """Cases of an nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr``, ``labelsTr``) or of TS-style case
    folders (``<case>/ct.nii.gz`` with ``<case>/segmentations/`` masks or a multilabel file)."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise TuckerTRTError(f"dataset folder not found: {dataset}")
    cases = _nnunet_cases(dataset) if (dataset / "dataset.json").is_file() else _ts_cases(dataset)
    if not cases:
        raise TuckerTRTError(f"{dataset} holds no labelled cases (expected an nnU-Net raw dataset with "
                             f"dataset.json/imagesTr/labelsTr, or <case>/{TS_CT_NAME} with <case>/segmentations/)")
    return cases


def _nnunet_cases(dataset: Path) -> list[LabelledCase]:
    try:
        info = json.loads((dataset / "dataset.json").read_text())
        names = {int(v): k for k, v in info["labels"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise TuckerTRTError(f"{dataset / 'dataset.json'} has no usable 'labels' ({type(e).__name__})") from None
    ending = info.get("file_ending", ".nii.gz")
    cases = []
    for label in sorted((dataset / "labelsTr").glob(f"*{ending}")):
        case = label.name[: -len(ending)]
        image = dataset / "imagesTr" / f"{case}_0000{ending}"
        if not image.is_file():
            raise TuckerTRTError(f"{label} has no image {image}")
        cases.append(LabelledCase(case, image, label, names))
    return cases


def _ts_cases(dataset: Path) -> list[LabelledCase]:
    cases = []
    for folder in sorted(p for p in dataset.iterdir() if p.is_dir()):
        ct = folder / TS_CT_NAME
        if not ct.is_file():
            continue
        masks = folder / "segmentations"
        multilabel = next((folder / n for n in TS_MULTILABEL_NAMES if (folder / n).is_file()), None)
        if masks.is_dir():
            cases.append(LabelledCase(folder.name, ct, masks))
        elif multilabel is not None:
            cases.append(LabelledCase(folder.name, ct, multilabel, _multilabel_names(multilabel)))
        else:
            raise TuckerTRTError(f"{folder} has {TS_CT_NAME} but neither segmentations/ nor a multilabel file "
                                 f"({', '.join(TS_MULTILABEL_NAMES)})")
    return cases


def _multilabel_names(path: Path) -> dict[int, str]:
    """Class names of a multilabel NIfTI: from a JSON header extension (as ``segment`` writes), else
    TotalSegmentator's ``total`` ids."""
    import nibabel as nib

    from tuckertrt.models.presets import ts_total_classes

    for ext in nib.load(str(path)).header.extensions:
        try:
            return {int(k): v for k, v in json.loads(ext.get_content()).items()}
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            continue
    return ts_total_classes()


def read_case_labels(case: LabelledCase, image: CTImage, spec: ModelSpec) -> np.ndarray:
    """The case's labels in ``image``'s voxel grid, as the model's class ids (other classes → background)."""
    by_name = {name: k for k, name in spec.labels.items() if k != 0}
    out = np.zeros(image.array.shape, dtype=np.uint8 if spec.num_classes <= 256 else np.int16)
    matched = 0
    if case.labels.is_dir():
        for mask_file in sorted(p for p in case.labels.iterdir() if is_nifti(p)):
            k = by_name.get(strip_nifti_suffix(mask_file.name))
            if k is not None:
                out[_same_grid(read_nifti(mask_file).array, image, mask_file) > 0] = k
                matched += 1
    else:
        labels = _same_grid(read_nifti(case.labels).array, image, case.labels).astype(np.int64)
        for value, name in (case.names or {}).items():
            if value != 0 and name in by_name:
                out[labels == value] = by_name[name]
                matched += 1
    if not matched:
        raise TuckerTRTError(f"no class of {case.labels} is one of {spec.name}'s classes (matched by name)")
    return out


def _same_grid(array: np.ndarray, image: CTImage, path: Path) -> np.ndarray:
    if array.shape != image.array.shape:
        raise TuckerTRTError(f"{path} has shape {array.shape}, its CT {image.source} has {image.array.shape}")
    return array


def preprocess_volume(name: str, image: CTImage, spec: ModelSpec, labels: np.ndarray | None = None) -> Volume:
    """A CT (and its labels) in the network grid, preprocessed exactly as ``segment`` preprocesses."""
    if spec.intensity is None:
        raise TuckerTRTError(f"{spec.name} has no CT intensity properties; cannot preprocess for it")
    grid, _ = to_network_grid(image.array, image.affine, spec, order=1)
    volume = Volume(name, normalize_ct(grid, spec.intensity)[None])
    if labels is not None:
        net_labels, _ = to_network_grid(labels, image.affine, spec, order=0)
        volume.labels, volume.truth = net_labels, True
    return volume


def load_labelled(dataset: Path, spec: ModelSpec) -> list[Volume]:
    volumes = []
    for case in find_labelled_cases(dataset):
        image = read_ct(case.image)
        volumes.append(preprocess_volume(case.name, image, spec, read_case_labels(case, image, spec)))
    return volumes


def find_cts(paths: Iterable[str | Path]) -> list[Path]:
    """NIfTI files and DICOM series folders named directly or found one level inside the given folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise TuckerTRTError(f"input not found: {p}")
        if p.is_file() or _holds_files_only(p):
            found.append(p)
        else:
            found.extend(sorted(c for c in p.iterdir() if (c.is_file() and is_nifti(c)) or c.is_dir()))
    return found


def _holds_files_only(folder: Path) -> bool:
    """A folder with files and no NIfTI or subfolder: a DICOM series."""
    children = list(folder.iterdir())
    return bool(children) and all(c.is_file() and not is_nifti(c) for c in children)


def load_unlabelled(paths: Iterable[str | Path], spec: ModelSpec) -> tuple[list[Volume], dict[str, str]]:
    """Preprocessed volumes of every readable CT, and the one-line reason for each unreadable input."""
    volumes, skipped = [], {}
    for path in find_cts(paths):
        try:
            image = read_ct(path)
        except TuckerTRTError as e:
            skipped[str(path)] = str(e)
            continue
        volumes.append(preprocess_volume(_unique_name(path, [v.name for v in volumes]), image, spec))
    if not volumes:
        detail = f" ({next(iter(skipped.values()))})" if skipped else ""
        raise TuckerTRTError(f"no readable CT among the inputs{detail}")
    return volumes, skipped


def _unique_name(path: Path, taken: list[str]) -> str:
    """The case name: the file name without suffix, or the folder's for TS-style ``<case>/ct.nii.gz``."""
    name = path.parent.name if path.name == TS_CT_NAME else strip_nifti_suffix(path.name)
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    return unique


def z_axis(spec: ModelSpec) -> int:
    """The network axis that runs along the patient's z (superior–inferior)."""
    reader_axis = 0 if spec.reader_axes == "zyx" else 2
    return list(spec.transpose_forward).index(reader_axis)


def split_holdout(volumes: Sequence[Volume], fraction: float, axis: int) -> tuple[list[Volume], list[Volume]]:
    """(training, validation): whole volumes held out when there are several, else disjoint ranges of
    ``axis`` (the last ``fraction`` of the slices) of the single volume; ``fraction`` 0 holds nothing out and
    validates on the training volumes themselves (in-sample)."""
    if not 0 <= fraction < 1:
        raise TuckerTRTError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return list(volumes), list(volumes)
    if len(volumes) > 1:
        n_val = min(len(volumes) - 1, max(1, math.ceil(fraction * len(volumes))))
        return list(volumes[:-n_val]), list(volumes[-n_val:])
    (volume,) = volumes
    size = volume.shape[axis]
    cut = size - max(1, round(fraction * size))
    if cut < 1:
        raise TuckerTRTError(f"{volume.name} has only {size} slices; too few to hold part of it out")
    return [_slab(volume, 0, cut, axis, "train")], [_slab(volume, cut, size, axis, "val")]


def _slab(volume: Volume, start: int, stop: int, axis: int, tag: str) -> Volume:
    def part(a: np.ndarray | None, lead: int) -> np.ndarray | None:
        if a is None:
            return None
        index = [slice(None)] * a.ndim
        index[lead + axis] = slice(start, stop)
        return np.ascontiguousarray(a[tuple(index)])

    return Volume(f"{volume.name}[{tag} {start}:{stop}]", part(volume.image, 1), part(volume.labels, 0),
                  part(volume.soft, 1), volume.truth)
