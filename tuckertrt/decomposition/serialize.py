"""Save and load decomposed models: state dict + rank spec + the plans needed to rebuild the architecture.

:func:`load_model` / :func:`load_models` take any MODEL argument: a saved model is read here, a plain one
(results folder, TotalSegmentator name, preset) resolved by :mod:`tuckertrt.models.resolve`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tuckertrt.decomposition.apply import decompose_network
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import atomic_path
from tuckertrt.models.checkpoint import load_weights, read_checkpoint
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.plans import architecture, configuration
from tuckertrt.models.resolve import SAVED_MODEL_SUFFIXES, single_model
from tuckertrt.models.resolve import load_models as load_plain_models
from tuckertrt.models.spec import ModelSpec

FORMAT = "tuckertrt-model"
VERSION = 1


def save_decomposed(model: LoadedModel, path: str | Path) -> Path:
    """Write ``model`` (decomposed or not) as one self-contained file, atomically."""
    payload = {
        "format": FORMAT, "version": VERSION,
        "network_weights": model.network.state_dict(),
        "decomposition": model.decomposition,
        "spec": model.spec.to_json(),
        "plans": model.plans, "dataset": model.dataset, "config_name": model.config_name,
        "source": model.source, "checkpoint_sha256": model.checkpoint_sha256, "trained": model.trained,
        "extra": model.extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_decomposed(path: str | Path) -> LoadedModel:
    ckpt = read_checkpoint(Path(path))
    if ckpt.get("format") != FORMAT:
        raise TuckerTRTError(f"{path} is not a tuckertrt model file (use a results folder for nnU-Net checkpoints)")
    arch = architecture(configuration(ckpt["plans"], ckpt["config_name"]))
    spec = ModelSpec.from_json(ckpt["spec"])
    network = arch.build(spec.input_channels, spec.num_classes)
    info = ckpt.get("decomposition")
    if info:
        decompose_network(network, {k: tuple(v) for k, v in info["ranks"].items()}, init=False)
    load_weights(network, ckpt["network_weights"], str(path))
    return LoadedModel(spec=spec, network=network.eval(), architecture=arch, plans=ckpt["plans"],
                       dataset=ckpt["dataset"], config_name=ckpt["config_name"], source=ckpt["source"],
                       checkpoint_sha256=ckpt.get("checkpoint_sha256"), trained=ckpt.get("trained", True),
                       decomposition=info, extra=ckpt.get("extra") or {})


def load_models(ref: str | Path, fold: int | str | None = None, download: bool = False) -> list[LoadedModel]:
    """All networks behind a MODEL argument: a saved tuckertrt model (``.pt``), or a plain model's networks."""
    path = Path(str(ref))
    if path.suffix in SAVED_MODEL_SUFFIXES and path.is_file():
        return [load_decomposed(path)]
    return load_plain_models(ref, fold, download)


def load_model(ref: str | Path, fold: int | str | None = None, download: bool = False) -> LoadedModel:
    """The one network behind a MODEL argument (see :func:`load_models`)."""
    return single_model(ref, load_models(ref, fold, download))
