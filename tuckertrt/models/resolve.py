"""Turn a MODEL argument naming a plain model (results folder, TotalSegmentator name, preset) into models.

A saved tuckertrt model (``.pt``) needs the decomposition's layers to rebuild: :func:`tuckertrt.load_model`
(:mod:`tuckertrt.decomposition.serialize`) reads those and hands everything else to :func:`load_models`.
"""
from __future__ import annotations

from pathlib import Path

from tuckertrt.data import BUNDLED_MODELS, bundled_model_folder
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models import totalseg
from tuckertrt.models.checkpoint import load_results_folder
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.presets import PRESETS, load_preset

SAVED_MODEL_SUFFIXES = (".pt", ".pth")


def describe_choices() -> str:
    return ("a results folder, a saved tuckertrt model (.pt), a TotalSegmentator name "
            f"({', '.join(totalseg.TS_NAMES)}), or a preset ({', '.join(list(PRESETS) + list(BUNDLED_MODELS))})")


def load_models(ref: str | Path, fold: int | str | None = None, download: bool = False) -> list[LoadedModel]:
    """All networks behind ``ref`` (five for ``total-1.5mm``, one otherwise); saved tuckertrt models excepted."""
    ref_s = str(ref)
    if ref_s in PRESETS:
        return [load_preset(ref_s)]
    if ref_s in BUNDLED_MODELS:
        return [load_results_folder(bundled_model_folder(ref_s), fold, name=ref_s)]
    if ref_s in totalseg.TS_NAMES:
        return [_load_ts(totalseg.TS_MODELS[i], ref_s, fold, download) for i in totalseg.TS_NAMES[ref_s]]
    path = Path(ref_s)
    if path.is_file() and path.suffix in SAVED_MODEL_SUFFIXES:
        raise TuckerTRTError(f"{ref_s} is a saved tuckertrt model: load it with tuckertrt.load_model")
    if path.is_dir():
        return [load_results_folder(path, fold)]
    raise TuckerTRTError(f"model not found: {ref_s} (expected {describe_choices()})")


def load_model(ref: str | Path, fold: int | str | None = None, download: bool = False) -> LoadedModel:
    return single_model(ref, load_models(ref, fold, download))


def single_model(ref: str | Path, models: list[LoadedModel]) -> LoadedModel:
    """The one model behind ``ref``, for commands that take one."""
    if len(models) != 1:
        raise TuckerTRTError(f"{ref} is a set of {len(models)} models; this command takes one "
                             f"(e.g. one results folder of the set)")
    return models[0]


def _load_ts(model: totalseg.TSModel, name: str, fold, download: bool) -> LoadedModel:
    folder = totalseg.results_folder(model)
    if folder is None:
        if not download:
            raise TuckerTRTError(
                f"{name} weights ({model.folder}) not found under {totalseg.weights_dir()}; "
                f"pass --download to fetch them from the TotalSegmentator release, or set TOTALSEG_HOME_DIR")
        folder = totalseg.download(model)
    return load_results_folder(folder, fold, name=f"{name}:{model.dataset_id}")
