#!/usr/bin/env python
"""Quality-aware ranks against uniform DF at equal cost, side by side: for each uniform DF, ``--ranks auto`` at the
same multiply-accumulates, both with weight-only (HOSVD) and data-aware factors; each row's measured OpenVINO
speedup over the uncompressed model (deployed form, one process, interleaved) and its Dice against the uncompressed
model on held-out data.

Calibration uses slices 0–84 of the example CT; quality is measured on slices 84–112 (never seen) and on the
bundled DICOM series of another patient.

    python benchmarks/auto_ranks.py [--model fixture-3mm] [--df 0.7 0.5] [--crops 8] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from tuckertrt.bench.layer_timing import deployed_openvino_seconds
from tuckertrt.data import example_ct, example_dicom
from tuckertrt.decomposition import decompose, load_model
from tuckertrt.decomposition.accounting import totals
from tuckertrt.decomposition.allocate import allocate
from tuckertrt.pipeline.auto_ranks import layer_options
from tuckertrt.training.calibration import calibration_crops
from tuckertrt.training.data import load_unlabelled, split_holdout, z_axis
from tuckertrt.training.validation import Validation, network_logits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fixture-3mm")
    ap.add_argument("--df", type=float, nargs="+", default=[0.7, 0.5])
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model = load_model(args.model)
    spec = model.spec
    volumes, _ = load_unlabelled([example_ct()], spec)
    train, held_out = split_holdout(volumes, 0.25, z_axis(spec))
    dicom, _ = load_unlabelled([example_dicom()], spec)

    def validation(vs):
        refs = [network_logits(model.network, v, spec, 0.8, "cpu").argmax(0) for v in vs]
        return Validation(vs, refs, spec, 0.8, "cpu", "teacher")

    checks = {"slices 84-112": validation(held_out), "other patient": validation(dicom)}
    crops = calibration_crops(train, spec.patch_size, args.crops)
    start = time.perf_counter()
    options = layer_options(model, crops)
    sensitivity_seconds = time.perf_counter() - start
    _, total = totals(model.network, spec.patch_size, spec.input_channels)
    fixed = total - sum(next(o for o in opts if o.ranks is None).macs for opts in options.values())
    shape = (1, spec.input_channels, *spec.patch_size)
    probe = tuple(min(p, 32) for p in spec.patch_size)
    rows = []
    for df in args.df:
        uniform = decompose(model, df=df)
        fraction = totals(uniform.network, spec.patch_size, spec.input_channels)[1] / total
        auto_spec = allocate(options, int(fraction * total - fixed)).rank_spec()
        variants = {f"DF {df:g} uniform": dict(df=df), f"auto at DF {df:g}'s MACs": dict(ranks=auto_spec)}
        built = {}
        for name, kw in variants.items():
            built[f"{name}, HOSVD"] = decompose(model, **kw)
            built[f"{name}, data-aware"] = decompose(model, **kw, calibration=crops)
        seconds = deployed_openvino_seconds([model.network] + [m.network for m in built.values()], shape, probe)
        for (name, m), s in zip(built.items(), seconds[1:]):
            row = {"variant": name, "mac_fraction": round(totals(m.network, spec.patch_size, 1)[1] / total, 3),
                   "speedup": round(seconds[0] / s, 3)}
            for check, validate in checks.items():
                result = validate(m.network)
                row[check] = {"mean_dice": round(result["mean_dice"], 3),
                              "worst_class": round(min(result["per_class_dice"].values()), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    info = {"model": args.model, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "sensitivity_seconds": round(sensitivity_seconds, 1), "rows": rows}
    print(f"sensitivity of every layer at every candidate rank: {sensitivity_seconds:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
