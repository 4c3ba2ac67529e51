#!/usr/bin/env python
"""Distillation with and without batch augmentation, side by side: the same data-aware decomposition distilled on
the example CT (slices 84–112 choose the checkpoint), then scored against the uncompressed model on the whole
example CT and on the bundled DICOM series of another patient (held out), over all classes of the uncompressed
model's segmentation and over those of at least 100 voxels.

    python benchmarks/augmented_distillation.py [--model fixture-3mm] [--df 0.5] [--iterations 200] [--json OUT]
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile

import numpy as np
import torch

from tuckertrt.bench.auto_backend import cpu_model
from tuckertrt.data import example_ct, example_dicom
from tuckertrt.decomposition import decompose, load_model
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP
from tuckertrt.parity.metrics import compare_labels
from tuckertrt.training.calibration import calibration_images
from tuckertrt.training.data import load_unlabelled
from tuckertrt.training.loop import TrainConfig
from tuckertrt.training.recovery import RecoveryOptions, distill, recipe
from tuckertrt.training.validation import network_logits

LARGE = 100  # voxels: classes at least this large in the reference form the second figure


def scores(network, cases, spec) -> dict[str, dict[str, float]]:
    names = {k: v for k, v in spec.labels.items() if k != 0}
    out = {}
    for name, (volume, reference) in cases.items():
        labels = network_logits(network, volume, spec, DEFAULT_TILE_STEP, "cpu").argmax(0)
        classes = compare_labels(reference, labels, spec.spacing, names, ts_ids=False).classes
        large = [c.dice for c in classes if c.reference_voxels >= LARGE]
        out[name] = {"mean_dice": float(np.mean([c.dice for c in classes])),
                     "mean_dice_large": float(np.mean(large)) if large else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fixture-3mm")
    parser.add_argument("--df", type=float, default=0.5)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_model(args.model)
    spec = teacher.spec
    cases = {}
    for name, path in (("example CT", example_ct()), ("other patient (held out)", example_dicom())):
        volume = load_unlabelled([path], spec)[0][0]
        cases[name] = (volume, network_logits(teacher.network, volume, spec, DEFAULT_TILE_STEP, "cpu").argmax(0))
    calibration = calibration_images([example_ct()], spec)
    student = decompose(teacher, df=args.df, calibration=calibration)
    rows = {"zero-shot": {"scores": scores(student.network, cases, spec)}}
    settings = recipe(distill=True)
    for augment in (False, True):
        config = TrainConfig(iterations=args.iterations, lr=settings["lr"], batch_size=1, weight_decay=0.0,
                             schedule=settings["schedule"], checkpoint_every=max(1, args.iterations // 4))
        options = RecoveryOptions(config=config, pseudo_label_weight=settings["pseudo_labels"], init="none",
                                  augment=augment, progress=False)
        with tempfile.TemporaryDirectory() as out:
            best, report = distill(teacher, copy.deepcopy(student), [example_ct()], out, options=options)
        rows[f"distilled, augment={augment}"] = {"scores": scores(best.network, cases, spec),
                                                 "seconds_per_iteration": report["seconds_per_iteration"],
                                                 "best_iteration": report["best_iteration"]}
    result = {"model": args.model, "df": args.df, "iterations": args.iterations, "threads": args.threads,
              "cpu": cpu_model(), "torch": torch.__version__, "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
