#!/usr/bin/env python
"""Whole-CT segmentation on a CUDA GPU, uncompressed vs compressed, side by side: everything ``segment`` does
(read, resample, normalise, sliding window, head, back to the input grid), PyTorch with FP16 autocast.

    python benchmarks/gpu_whole_ct.py --model MODEL --compressed CKPT [--ct CT ...] [--rounds 3] [--json OUT]

Without --compressed, the model is decomposed at --df (default 0.3). Each round runs every configuration once
(interleaved); the best of the rounds is reported with the compressed model's Dice against the uncompressed
model's segmentation (the build's parity gate decides).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from tuckertrt.data import example_ct
from tuckertrt.decomposition import decompose, load_model
from tuckertrt.decomposition.serialize import load_decomposed
from tuckertrt.inference.io import read_ct
from tuckertrt.inference.segment import Runner, segment_volume
from tuckertrt.backends.torch_runner import TorchBackend
from tuckertrt.bench.parity import dice_summary
from tuckertrt.parity.gate import DEFAULT_GATE


def runner(model, precision: str) -> Runner:
    shape = (1, model.spec.input_channels, *model.spec.patch_size)
    return Runner(model.spec, TorchBackend(model.network, shape, precision, "cuda"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--compressed", default=None)
    ap.add_argument("--df", type=float, default=0.3)
    ap.add_argument("--ct", nargs="+", default=None)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (run this on a GPU machine)")
        return 0
    torch.backends.cudnn.benchmark = True
    base = load_model(args.model)
    small = load_decomposed(args.compressed) if args.compressed else decompose(base, df=args.df)
    runners = {"uncompressed": runner(base, args.precision), "compressed": runner(small, args.precision)}
    rows = []
    for ct in args.ct or [str(example_ct())]:
        image = read_ct(ct)
        for r in runners.values():
            segment_volume(image, r)  # warm-up, cuDNN autotuning
        seconds = {name: [] for name in runners}
        labels = {}
        for _ in range(args.rounds):
            for name, r in runners.items():
                torch.cuda.synchronize()
                start = time.perf_counter()
                result = segment_volume(image, r)
                seconds[name].append(time.perf_counter() - start)
                labels[name] = result.labels
        mean, worst = dice_summary(labels["uncompressed"], labels["compressed"])
        best = {n: min(v) for n, v in seconds.items()}
        row = {"ct": str(ct), "shape": list(image.array.shape), "seconds": best,
               "speedup": best["uncompressed"] / best["compressed"], "mean_dice": mean, "worst_class_dice": worst,
               "gate": DEFAULT_GATE.passes(mean, worst), "tiles": result.tiles}
        rows.append(row)
        print(json.dumps(row), flush=True)
    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "precision": args.precision,
            "model": args.model, "compressed": args.compressed or f"DF {args.df} zero-shot", "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
