"""TotalSegmentator model names, where their weights live, and the official weights download."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import atomic_dir, sha256_file
from tuckertrt.models.checkpoint import is_results_folder

RELEASE_URL = "https://github.com/wasserth/TotalSegmentator/releases/download/v2.0.0-weights"
# sha256 of each release archive, by dataset id. An archive with a pinned hash is refused when it differs;
# hashes are added here once obtained from a trusted download (``--sha256`` meanwhile).
PINNED_SHA256: dict[int, str] = {}
_USER_SHA256: dict[int | None, str] = {}


@dataclass(frozen=True)
class TSModel:
    dataset_id: int
    folder: str
    trainer: str


TS_MODELS: dict[int, TSModel] = {m.dataset_id: m for m in (
    TSModel(291, "Dataset291_TotalSegmentator_part1_organs_1559subj", "nnUNetTrainerNoMirroring"),
    TSModel(292, "Dataset292_TotalSegmentator_part2_vertebrae_1532subj", "nnUNetTrainerNoMirroring"),
    TSModel(293, "Dataset293_TotalSegmentator_part3_cardiac_1559subj", "nnUNetTrainerNoMirroring"),
    TSModel(294, "Dataset294_TotalSegmentator_part4_muscles_1559subj", "nnUNetTrainerNoMirroring"),
    TSModel(295, "Dataset295_TotalSegmentator_part5_ribs_1559subj", "nnUNetTrainerNoMirroring"),
    TSModel(297, "Dataset297_TotalSegmentator_total_3mm_1559subj", "nnUNetTrainer_4000epochs_NoMirroring"),
    TSModel(298, "Dataset298_TotalSegmentator_total_6mm_1559subj", "nnUNetTrainer_4000epochs_NoMirroring"),
)}
TS_NAMES: dict[str, tuple[int, ...]] = {
    "total-3mm": (297,),
    "total-1.5mm": (291, 292, 293, 294, 295),
    "total-6mm": (298,),
}


def weights_dir() -> Path:
    """``$TOTALSEG_WEIGHTS_PATH``, else ``$TOTALSEG_HOME_DIR/nnunet/results``, else ``~/.totalsegmentator/...``."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = Path(os.environ.get("TOTALSEG_HOME_DIR", Path.home() / ".totalsegmentator"))
    return home / "nnunet" / "results"


def results_folder(model: TSModel, root: Path | None = None) -> Path | None:
    """The ``<trainer>__nnUNetPlans__3d_fullres`` folder of an installed model, or None."""
    base = (root or weights_dir()) / model.folder
    preferred = base / f"{model.trainer}__nnUNetPlans__3d_fullres"
    if is_results_folder(preferred):
        return preferred
    found = sorted(p for p in base.glob("*__3d_fullres") if is_results_folder(p))
    return found[0] if found else None


def download_url(model: TSModel) -> str:
    base = os.environ.get("TUCKERTRT_WEIGHTS_URL", RELEASE_URL).rstrip("/")
    return f"{base}/{model.folder}.zip"


def expect_sha256(values: tuple[str, ...]) -> None:
    """Hashes given on the command line (``--sha256 HEX`` for one archive, ``--sha256 ID=HEX`` per dataset id);
    they take precedence over :data:`PINNED_SHA256`."""
    for value in values:
        key, _, digest = value.rpartition("=")
        digest = digest.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or (key and not key.isdigit()):
            raise UsageError(f"--sha256 takes 64 hex digits, optionally after a dataset id (297=...), got {value!r}")
        _USER_SHA256[int(key) if key else None] = digest


def pinned_sha256(model: TSModel) -> str | None:
    return _USER_SHA256.get(model.dataset_id) or _USER_SHA256.get(None) or PINNED_SHA256.get(model.dataset_id)


def download(model: TSModel, root: Path | None = None, expected_sha256: str | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch the official weights zip, check its size and sha256 (given, ``--sha256`` or pinned), unpack it
    atomically."""
    root = root or weights_dir()
    root.mkdir(parents=True, exist_ok=True)
    url = download_url(model)
    expected = expected_sha256 or pinned_sha256(model)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        zip_path = Path(tmp) / f"{model.folder}.zip"
        _fetch(url, zip_path, timeout)
        if expected and sha256_file(zip_path) != expected.lower():
            raise TuckerTRTError(f"checksum mismatch for {url}: expected sha256 {expected}, got "
                                 f"{sha256_file(zip_path)}")
        _unpack(zip_path, root / model.folder)
    folder = results_folder(model, root)
    if folder is None:
        raise TuckerTRTError(f"{url} unpacked, but holds no nnU-Net results folder for {model.folder}")
    return folder


def _fetch(url: str, dest: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
            expected = int(r.headers.get("Content-Length") or -1)
            got = 0
            while block := r.read(1 << 20):
                f.write(block)
                got += len(block)
                if sys.stderr.isatty() and expected > 0:
                    print(f"\rdownloading {dest.name}: {100 * got // expected}%", end="", file=sys.stderr)
    except (urllib.error.URLError, OSError) as e:
        raise TuckerTRTError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    if expected >= 0 and got != expected:
        raise TuckerTRTError(f"download of {url} is incomplete: {got} of {expected} bytes")


def _unpack(zip_path: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as z:
            bad = z.testzip()
            if bad:
                raise TuckerTRTError(f"corrupt member {bad} in {zip_path.name}")
            names = z.namelist()
            # The release zips contain the dataset folder itself; strip it so we unpack into `dest`.
            prefix = f"{dest.name}/" if all(n.startswith(f"{dest.name}/") for n in names) else ""
            with atomic_dir(dest) as tmp:
                for info in z.infolist():
                    rel = info.filename[len(prefix):]
                    target = (tmp / rel).resolve()
                    if not rel or not target.is_relative_to(tmp.resolve()) or target == tmp.resolve():
                        continue  # the prefix dir itself, or a path escaping the folder
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with z.open(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out)
    except zipfile.BadZipFile:
        raise TuckerTRTError(f"{zip_path.name} is not a valid zip file") from None
