"""Recover a compressed model's accuracy: labelled fine-tuning and/or distillation from the uncompressed model,
through the one training loop, with held-out validation, best-checkpoint keeping and resumption.

Output folder: ``model.pt`` (the best student so far, loadable as MODEL by every command), ``state.pt`` (the
resumable training state) and ``report.json`` (zero-shot and recovered figures side by side, the history, and
``tuckertrt-eval/1`` records for ``tuckertrt report``).
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import read_json, write_json_atomic
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.training.augment import Augmentation
from tuckertrt.training.calibration import DEFAULT_CALIBRATION_CROPS, calibration_crops
from tuckertrt.training.data import load_labelled, load_unlabelled, split_holdout, z_axis
from tuckertrt.training.loop import Hooks, TrainConfig, config_fingerprint, train
from tuckertrt.training.losses import Objective
from tuckertrt.training.sampling import Batch, PatchSampler, Volume
from tuckertrt.training.validation import Validation, network_logits, summary

MODEL_FILE, STATE_FILE, REPORT_FILE = "model.pt", "state.pt", "report.json"
INITS = ("data", "none")
ZERO_SHOT_FILE = "zero_shot.json"  # the student's scores before the data-aware initialisation
EVAL_SCHEMA = "tuckertrt-eval/1"


@dataclass
class RecoveryOptions:
    config: TrainConfig = field(default_factory=TrainConfig)
    patch: tuple[int, ...] | None = None  # training crop; default: the model's patch
    temperature: float = 2.0
    label_weight: float = 1.0
    distill_weight: float = 1.0
    pseudo_label_weight: float = 0.0  # Dice + CE on the teacher's segmentation where there is no ground truth
    oversample_foreground: float = 1 / 3
    val_fraction: float = 0.25
    tile_step: float = DEFAULT_TILE_STEP
    cache_limit_bytes: int = 2 << 30  # cache the teacher's logits of the training volumes up to this size
    augment: bool = True  # distillation on augmented batches (the teacher then runs on each batch)
    init: str = "data"  # "data": refit the factors to the teacher's layer outputs first; "none": as given
    calibration_crops: int = DEFAULT_CALIBRATION_CROPS
    progress: bool = True

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise TuckerTRTError(f"unknown initialisation {self.init!r} (choose from {', '.join(INITS)})")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise TuckerTRTError(f"temperature must be a positive number, got {self.temperature}")


def recipe(distill: bool) -> dict[str, Any]:
    """Default training settings: distillation's measured recipe (AdamW 5e-4 with nnU-Net's poly decay, no weight
    decay, Dice + CE on the teacher's segmentation beside the KL term), or the paper's for labelled fine-tuning
    (AdamW 1e-5, weight decay 3e-5, constant)."""
    if distill:
        return {"lr": 5e-4, "schedule": "poly", "weight_decay": 0.0, "pseudo_labels": 1.0}
    return {"lr": 1e-5, "schedule": "constant", "weight_decay": 3e-5, "pseudo_labels": 0.0}


def check_pair(teacher: LoadedModel, student: LoadedModel) -> None:
    """The teacher must be the uncompressed version of the student's model."""
    if teacher.is_decomposed or teacher.extra.get("pruning"):
        raise TuckerTRTError(f"the teacher {teacher.name} is itself compressed; give the uncompressed model")
    a, b = teacher.spec, student.spec
    for what, x, y in (("classes", a.labels, b.labels), ("patch", a.patch_size, b.patch_size),
                       ("spacing", a.spacing, b.spacing), ("intensity normalisation", a.intensity, b.intensity),
                       ("axis order", (a.reader_axes, a.transpose_forward), (b.reader_axes, b.transpose_forward)),
                       ("architecture", teacher.architecture, student.architecture)):
        if x != y:
            raise TuckerTRTError(f"teacher {teacher.name} and student {student.name} are different models "
                                 f"(their {what} differ)")


def check_output_dir(out_dir: Path, inputs: Sequence[Path], resume: bool) -> None:
    out = Path(os.path.abspath(out_dir))
    for p in inputs:
        folder = Path(os.path.abspath(p))
        if out == folder or (folder.is_dir() and folder in out.parents):
            raise TuckerTRTError(f"output {out_dir} is inside the input folder {p}; choose another output")
    if out.exists() and not out.is_dir():
        raise TuckerTRTError(f"output {out_dir} exists and is not a folder")
    if (out / STATE_FILE).exists() and not resume:
        raise TuckerTRTError(f"{out_dir} holds a training state; pass --resume to continue it or choose a new folder")


def method_of(model: LoadedModel) -> str:
    return "pruning" if model.extra.get("pruning") else "tucker" if model.is_decomposed else "original"


def compression(original: LoadedModel, student: LoadedModel) -> dict[str, Any]:
    from tuckertrt.toolkit.pruning import nonzero_params

    params_original = nonzero_params(original.network, original)
    params = nonzero_params(student.network, student)
    info = student.decomposition or {}
    pruning = student.extra.get("pruning") or {}
    return {"method": method_of(student), "df": info.get("df"), "pruning_amount": pruning.get("amount"),
            "params": params, "params_original": params_original, "compression_ratio": params_original / params}


def recover(original: LoadedModel, student: LoadedModel, out_dir: str | os.PathLike, *,
            dataset: str | os.PathLike | None = None, cts: Sequence[str | os.PathLike] = (),
            distill: bool | None = None, options: RecoveryOptions | None = None, resume: bool = False,
            after_step: Callable[[torch.nn.Module], None] | None = None,
            interrupt_after: int | None = None) -> tuple[LoadedModel, dict[str, Any]]:
    """Train ``student`` on a labelled ``dataset`` and/or by distilling ``original`` on ``cts`` (and on the
    dataset's images); ``distill`` defaults to "when CTs are given". Returns the best student and the report."""
    options = options or RecoveryOptions()
    out = Path(out_dir)
    distill = bool(cts) if distill is None else distill
    inputs = [Path(p) for p in ([dataset] if dataset else []) + list(cts)]
    if not inputs:
        raise TuckerTRTError("give labelled data (--data) and/or CTs to distill on (--distill)")
    if cts and not distill:
        raise TuckerTRTError("unlabelled CTs can only be used for distillation")
    check_output_dir(out, inputs, resume)
    check_pair(original, student)
    spec = student.spec
    volumes: list[Volume] = load_labelled(Path(dataset), spec) if dataset else []
    skipped: dict[str, str] = {}
    if cts:
        unlabelled, skipped = load_unlabelled(cts, spec)
        volumes += unlabelled
    train_volumes, val_volumes = split_holdout(volumes, options.val_fraction, z_axis(spec))
    device = options.config.device
    prepare = None
    if distill:
        cached = _attach_teacher(original, train_volumes, options, device)
        references = [network_logits(original.network, v, spec, options.tile_step, device).argmax(0)
                      for v in val_volumes]
        if not cached:
            prepare = _online_teacher(original.network, device, options.config.amp,
                                      Augmentation() if options.augment else None)
    else:
        references = [v.labels for v in val_volumes]
    validate = Validation(val_volumes, references, spec, options.tile_step, device,
                          "teacher" if distill else "labels")
    with torch.no_grad():
        original_scores = validate(original.network)
    out.mkdir(parents=True, exist_ok=True)
    refit = options.init == "data" and student.is_decomposed
    if refit and not (resume and (out / STATE_FILE).exists()):
        from tuckertrt.decomposition.data_aware import fit_network

        with torch.no_grad():
            write_json_atomic(out / ZERO_SHOT_FILE, validate(student.network))
        crops = calibration_crops(train_volumes, spec.patch_size, options.calibration_crops, options.config.seed)
        fit_network(original.network, student.network, crops.to(device), options.config.seed)
    sampler = PatchSampler(train_volumes, options.patch or spec.patch_size, options.config.batch_size,
                           options.oversample_foreground)
    objective = Objective(options.label_weight, options.distill_weight if distill else 0.0, options.temperature,
                          options.pseudo_label_weight if distill else 0.0)
    mode = "+".join(m for m, on in (("distill", distill), ("labels", any(v.truth for v in train_volumes))) if on)

    def save_best(network: torch.nn.Module, entry: dict[str, Any]) -> None:
        from tuckertrt.decomposition.serialize import save_decomposed

        best = copy.copy(student)
        best.extra = {**student.extra, "recovery": {"mode": mode, "iteration": entry["iteration"],
                                                    **summary(entry.get("validation", {}))}}
        save_decomposed(best, out / MODEL_FILE)

    fingerprint = config_fingerprint(
        options.config, student=_identity(student), teacher=original.checkpoint_sha256, mode=mode,
        inputs=[str(p) for p in inputs], patch=list(options.patch or spec.patch_size),
        temperature=options.temperature,
        weights=[options.label_weight, options.distill_weight, options.pseudo_label_weight],
        val_fraction=options.val_fraction, augment=options.augment and distill,
        init=options.init if student.is_decomposed else "none")
    result = train(student.network, sampler.sample, objective, options.config, out / STATE_FILE,
                   Hooks(save_best, validate, after_step, prepare), fingerprint, resume, options.progress,
                   interrupt_after)
    from tuckertrt.decomposition.serialize import load_decomposed

    best = load_decomposed(out / MODEL_FILE)
    before_init = read_json(out / ZERO_SHOT_FILE) if refit else None
    report = _report(original, student, mode, result, train_volumes, val_volumes, skipped, options,
                     original_scores, before_init)
    write_json_atomic(out / REPORT_FILE, report)
    return best, report


def _identity(student: LoadedModel) -> dict[str, Any]:
    info = student.decomposition or {}
    return {"model": student.name, "source": student.source, "ranks": info.get("ranks"),
            "pruning": (student.extra.get("pruning") or {}).get("amount")}


def _attach_teacher(teacher: LoadedModel, volumes: Sequence[Volume], options: RecoveryOptions,
                    device: str) -> bool:
    """Teacher segmentation of each training volume (sampling foreground where there is no ground truth) and,
    on the CPU, if they fit in ``cache_limit_bytes`` as float16 and batches are not augmented, its logits as the
    soft targets; returns whether cached. On a GPU the teacher's forward pass costs less than cropping and
    copying cached logits."""
    spec = teacher.spec
    size = sum(spec.num_classes * int(np.prod(v.shape)) * 2 for v in volumes)
    cache = torch.device(device).type == "cpu" and size <= options.cache_limit_bytes and not options.augment
    for v in volumes:
        logits = network_logits(teacher.network, v, spec, options.tile_step, device)
        if not v.truth:
            v.labels = logits.argmax(0).astype(np.uint8 if spec.num_classes <= 256 else np.int16)
        v.soft = logits.astype(np.float16) if cache else None
    return cache


def _online_teacher(teacher: torch.nn.Module, device: str, amp: bool,
                    augmentation: Augmentation | None) -> Callable[[Batch], Batch]:
    """Soft targets computed per batch, left on ``device`` for the loss. With ``augmentation`` the batch is
    augmented first, and where a sample has no ground truth its pseudo-labels become the teacher's segmentation
    of the augmented batch."""
    from tuckertrt.training.loop import autocast

    teacher = teacher.to(device).eval()

    def prepare(batch: Batch) -> Batch:
        if augmentation is not None:
            batch = augmentation(batch.to(torch.device(device)))
        with torch.no_grad(), autocast(torch.device(device), amp):
            batch.soft = teacher(batch.image.to(device)).float()
        if augmentation is not None and batch.labels is not None:
            batch.labels = torch.where(batch.truth.to(device).view(-1, *[1] * (batch.labels.dim() - 1)),
                                       batch.labels.to(device), batch.soft.argmax(1))
        return batch

    return prepare


def _report(original: LoadedModel, student: LoadedModel, mode: str, result, train_volumes: Sequence[Volume],
            val_volumes: Sequence[Volume], skipped: dict[str, str], options: RecoveryOptions,
            original_scores: dict[str, Any], before_init: dict[str, Any] | None) -> dict[str, Any]:
    accounting = compression(original, student)
    base = {"method": "original", "df": None, "pruning_amount": None, "params": accounting["params_original"],
            "params_original": accounting["params_original"], "compression_ratio": 1.0}
    initialised = result.history[0].get("validation", {})
    zero = before_init or initialised
    best_entry = next(h for h in result.history if h["iteration"] == result.best["iteration"])
    final = best_entry.get("validation", {})
    stage = "distilled" if "distill" in mode else "fine-tuned"
    trained = result.iterations - (result.resumed_from or 0)
    return {
        "schema": "tuckertrt-recovery/1", "model": student.name, "mode": mode, **accounting,
        "train_volumes": [v.name for v in train_volumes], "validation_volumes": [v.name for v in val_volumes],
        "held_out": _held_out(train_volumes, val_volumes), "skipped_inputs": skipped,
        "zero_shot": summary(zero), "data_aware_init": summary(initialised) if before_init else None,
        "recovered": summary(final),
        "per_class_dice": {"zero_shot": zero.get("per_class_dice"), "recovered": final.get("per_class_dice")},
        "best_iteration": result.best["iteration"], "iterations": result.iterations,
        "stopped_early": result.stopped_early, "resumed_from": result.resumed_from,
        "seconds": round(result.seconds, 1),
        "seconds_per_iteration": round(result.seconds / trained, 3) if trained else None,
        "options": {k: v for k, v in vars(options).items() if k != "config"} | {"config": vars(options.config)},
        "history": [{"iteration": h["iteration"], "train": h["train"], **summary(h.get("validation", {}))}
                    for h in result.history],
        "original": summary(original_scores),
        "evaluations": [evaluation_record(original, base, "original", original_scores),
                        evaluation_record(student, accounting, "zero-shot", zero),
                        evaluation_record(student, accounting, stage, final)],
    }


def _held_out(train_volumes: Sequence[Volume], val_volumes: Sequence[Volume]) -> str:
    names = ", ".join(v.name for v in val_volumes)
    return f"validation on {names}; training on {', '.join(v.name for v in train_volumes)}"


def evaluation_record(model: LoadedModel, accounting: dict[str, Any], stage: str,
                      validation: dict[str, Any]) -> dict[str, Any]:
    """One ``tuckertrt-eval/1`` record: per-case, per-class Dice/NSD of one model at one stage."""
    return {"schema": EVAL_SCHEMA, "model": model.name, "stage": stage, **accounting,
            "reference": validation.get("reference"), "mean_dice": validation.get("mean_dice"),
            "mean_nsd": validation.get("mean_nsd"), "cases": validation.get("cases", {})}


def distill(teacher: LoadedModel, student: LoadedModel, cts: Sequence[str | os.PathLike],
            out_dir: str | os.PathLike, **kwargs: Any) -> tuple[LoadedModel, dict[str, Any]]:
    """Distil ``teacher`` (uncompressed) into ``student`` (decomposed) on unlabelled CTs."""
    return recover(teacher, student, out_dir, cts=cts, distill=True, **kwargs)


def finetune(original: LoadedModel, student: LoadedModel, dataset: str | os.PathLike,
             out_dir: str | os.PathLike, **kwargs: Any) -> tuple[LoadedModel, dict[str, Any]]:
    """Fine-tune ``student`` on a labelled dataset (``original`` for accounting and checks)."""
    return recover(original, student, out_dir, dataset=dataset, distill=False, **kwargs)
