"""Read and write nnU-Net v2 results folders (plans.json, dataset.json, fold_K/checkpoint_final.pth)."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import atomic_path, check_input_file, read_json, sha256_file, write_json_atomic
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.plans import architecture, configuration, model_spec

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")


def is_results_folder(path: Path) -> bool:
    return path.is_dir() and (path / "plans.json").is_file() and (path / "dataset.json").is_file()


def find_checkpoint(folder: Path, fold: int | str | None = None) -> Path:
    folds = [folder / f"fold_{fold}"] if fold is not None else sorted(folder.glob("fold_*"))
    for fold_dir in folds:
        for name in CHECKPOINT_NAMES:
            if (fold_dir / name).is_file():
                return fold_dir / name
    where = folds[0] if fold is not None else folder / "fold_*"
    raise TuckerTRTError(f"no checkpoint_final.pth in {where}")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load an nnU-Net checkpoint safely (weights_only, with the few numpy types nnU-Net pickles)."""
    import numpy as np

    core = np._core.multiarray
    # nnU-Net pickles numpy scalars in its logs; numpy 1.x wrote them as numpy.core.*, numpy 2 as numpy._core.*.
    safe = [core.scalar, core._reconstruct, np.ndarray, np.dtype, (core.scalar, "numpy.core.multiarray.scalar"),
            (core._reconstruct, "numpy.core.multiarray._reconstruct"),
            *{type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)}]
    check_input_file(path, "checkpoint")
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TuckerTRTError(f"checkpoint not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TuckerTRTError(f"{path} is not a readable PyTorch checkpoint ({first[:160]})") from None
    if isinstance(ckpt, dict) and "network_weights" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {"network_weights": ckpt}
    raise TuckerTRTError(f"{path} is not an nnU-Net checkpoint (no 'network_weights')")


def load_weights(network: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, explaining any mismatch with the plans in one line."""
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: plans give {tuple(own[k].shape)}, "
                         f"weights have {tuple(state[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise TuckerTRTError(f"plans do not match the weights in {source}: " + "; ".join(parts))
    network.load_state_dict(state)


def load_results_folder(folder: str | Path, fold: int | str | None = None,
                        config_name: str = "3d_fullres", name: str | None = None) -> LoadedModel:
    folder = Path(folder)
    if not folder.exists():
        raise TuckerTRTError(f"model folder not found: {folder}")
    if not is_results_folder(folder):
        raise TuckerTRTError(f"{folder} is not an nnU-Net results folder (needs plans.json and dataset.json)")
    plans = read_json(folder / "plans.json", "plans file")
    dataset = read_json(folder / "dataset.json", "dataset file")
    ckpt_path = find_checkpoint(folder, fold)
    ckpt = read_checkpoint(ckpt_path)
    init_args = ckpt.get("init_args") or {}
    config_name = init_args.get("configuration", config_name) if isinstance(init_args, dict) else config_name
    spec = model_spec(name or folder.parent.name or folder.name, plans, dataset, config_name)
    arch = architecture(configuration(plans, config_name))
    network = arch.build(spec.input_channels, spec.num_classes, deep_supervision=False)
    load_weights(network, ckpt["network_weights"], str(ckpt_path))
    network.eval()
    return LoadedModel(spec=spec, network=network, architecture=arch, plans=plans, dataset=dataset,
                       config_name=config_name, source=str(folder), checkpoint_sha256=sha256_file(ckpt_path),
                       trained=True, extra={"trainer": ckpt.get("trainer_name")})


def save_results_folder(model: LoadedModel, folder: str | Path, trainer: str = "nnUNetTrainer",
                        fold: int = 0) -> Path:
    """Write ``model`` as an nnU-Net v2 results folder (what nnU-Net's trainer would leave)."""
    folder = Path(folder)
    (folder / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "plans.json", model.plans)
    write_json_atomic(folder / "dataset.json", model.dataset)
    ckpt = {
        "network_weights": model.network.state_dict(),
        "init_args": {"plans": model.plans, "configuration": model.config_name, "fold": fold,
                      "dataset_json": model.dataset, "unpack_dataset": True},
        "trainer_name": trainer,
        "current_epoch": 0,
        "inference_allowed_mirroring_axes": None,
    }
    with atomic_path(folder / f"fold_{fold}" / "checkpoint_final.pth") as tmp:
        torch.save(ckpt, tmp)
    return folder
