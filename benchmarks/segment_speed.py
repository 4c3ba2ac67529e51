#!/usr/bin/env python
"""Whole-CT segmentation of the example CT, uncompressed vs decomposed, timed side by side in one process.

For each runtime (ONNX Runtime f32 and OpenVINO bf16 as ``tuckertrt segment`` deploys them: exact graph rewrites,
head after the sliding window; and OpenVINO bf16 running the exported graph unchanged) both models are exported
once, then segmented in interleaved rounds (preprocessing, sliding window, resampling back: everything
``tuckertrt segment`` does).
Each configuration's segmentation is checked against the uncompressed model's on ONNX Runtime f32 with the
build's parity gate (mean Dice ≥ 0.90, every class ≥ 0.50). Prints seconds per volume and the speedup per
runtime, and the headline: fastest compressed vs fastest uncompressed configuration, each passing the gate.

    python benchmarks/segment_speed.py [--model ts-3mm] [--df 0.3 | --compressed MODEL.pt] [--ct CT] [--rounds 2]

``--compressed`` takes a compressed checkpoint of ``--model`` (e.g. ``tuckertrt finetune``'s model.pt) instead
of decomposing it zero-shot.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tuckertrt.backends.registry import backend_class, open_backend
from tuckertrt.bench.parity import dice_summary, format_score
from tuckertrt.bench.run import GRAPH_FORMS
from tuckertrt.bench.variants import checkpoint_variants
from tuckertrt.bench.timing import interleaved
from tuckertrt.decomposition import decompose
from tuckertrt.parity.export import export_model
from tuckertrt.inference.io import read_ct
from tuckertrt.inference.segment import Runner, segment_volume
from tuckertrt.decomposition import load_model
from tuckertrt.data import example_ct
from tuckertrt.parity.gate import DEFAULT_GATE

RUNTIMES = (("onnxruntime", "fp32", "deployed"), ("openvino", "bf16", "deployed"), ("openvino", "bf16", "exported"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--df", type=float, default=0.3)
    ap.add_argument("--ct", type=Path, default=example_ct())
    ap.add_argument("--compressed", type=Path, default=None, help="compressed checkpoint of --model (replaces --df)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    original = load_model(args.model)
    if args.compressed:
        (variant,) = checkpoint_variants(original, [args.compressed])
        compressed_key, compressed = variant.key, variant.model
    else:
        compressed_key, compressed = f"DF {args.df}", decompose(original, df=args.df)
    models = {"uncompressed": original, compressed_key: compressed}
    image = read_ct(args.ct)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = {name: export_model(m, Path(tmp) / name.replace(" ", "_"), fp16=False, verify=False).artifacts["fp32"]
                for name, m in models.items()}
        runs, labels = {}, {}
        for backend, precision, form in RUNTIMES:
            if not backend_class(backend).available():
                print(f"{backend}: not installed, skipped")
                continue
            for name, m in models.items():
                runner = Runner(m.spec, open_backend(backend, onnx[name], precision=precision, **GRAPH_FORMS[form]))
                key = (backend, precision, form, name)
                labels[key] = segment_volume(image, runner).labels  # also the warm-up
                runs[key] = lambda r=runner: segment_volume(image, r)
        timings = interleaved(runs, rounds=args.rounds, warmup=0)
    reference = labels[("onnxruntime", "fp32", "deployed", "uncompressed")]
    print(f"{args.model}, {args.ct.name} {image.array.shape}, median of {args.rounds} interleaved rounds (s/volume); "
          f"parity vs the uncompressed model on ONNX Runtime f32, gate: {DEFAULT_GATE.describe()}")
    passing: dict[str, list[float]] = {"uncompressed": [], "compressed": []}
    for key, timing in timings.items():
        mean, worst = dice_summary(reference, labels[key])
        ok = DEFAULT_GATE.passes(mean, worst)
        print(f"  {' '.join(key[:3])} {key[3]}: {timing.median:.2f} s, Dice {format_score(mean)} (worst class "
              f"{format_score(worst)}){'' if ok else ' FAILS the gate'}")
        if ok:
            passing["uncompressed" if key[3] == "uncompressed" else "compressed"].append(timing.median)
    for backend, precision, form in RUNTIMES:
        u, c = (timings.get((backend, precision, form, name)) for name in models)
        if u and c:
            print(f"  {backend} {precision} {form}: {compressed_key} {u.median / c.median:.2f}x faster")
    if passing["uncompressed"] and passing["compressed"]:
        u, c = min(passing["uncompressed"]), min(passing["compressed"])
        print(f"best compressed vs best uncompressed, both passing the gate: {u / c:.2f}x ({c:.2f} s vs {u:.2f} s)")
    else:
        print("no compressed configuration passes the gate" if passing["uncompressed"] else "nothing passes the gate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
