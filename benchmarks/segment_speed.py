#!/usr/bin/env python
"""Whole-CT segmentation of the example CT, uncompressed vs decomposed, timed side by side in one process.

For each runtime (ONNX Runtime f32 and OpenVINO bf16 as ``tuckertrt segment`` deploys them: exact graph rewrites,
head after the sliding window; and OpenVINO bf16 running the exported graph unchanged) both models are exported
once, then segmented in interleaved rounds (preprocessing, sliding window, resampling back: everything
``tuckertrt segment`` does).
Prints seconds per volume and the speedup per runtime, and the headline: fastest compressed vs fastest
uncompressed runtime.

    python benchmarks/segment_speed.py [--model ts-3mm] [--df 0.3] [--ct CT] [--rounds 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tuckertrt.backends.registry import backend_class, open_backend
from tuckertrt.bench.run import GRAPH_FORMS
from tuckertrt.bench.timing import interleaved
from tuckertrt.decomposition import decompose
from tuckertrt.graph.export import export_model
from tuckertrt.inference.io import read_ct
from tuckertrt.inference.segment import Runner, segment_volume
from tuckertrt.models import load_model
from tuckertrt.data import example_ct

RUNTIMES = (("onnxruntime", "fp32", "deployed"), ("openvino", "bf16", "deployed"), ("openvino", "bf16", "exported"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--df", type=float, default=0.3)
    ap.add_argument("--ct", type=Path, default=example_ct())
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    original = load_model(args.model)
    models = {"uncompressed": original, f"DF {args.df}": decompose(original, df=args.df)}
    image = read_ct(args.ct)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = {name: export_model(m, Path(tmp) / name.replace(" ", "_"), fp16=False, verify=False).artifacts["fp32"]
                for name, m in models.items()}
        runs = {}
        for backend, precision, form in RUNTIMES:
            if not backend_class(backend).available():
                print(f"{backend}: not installed, skipped")
                continue
            for name, m in models.items():
                runner = Runner(m.spec, open_backend(backend, onnx[name], precision=precision, **GRAPH_FORMS[form]))
                runs[(backend, precision, form, name)] = lambda r=runner: segment_volume(image, r)
        timings = interleaved(runs, rounds=args.rounds, warmup=1)
    print(f"{args.model}, {args.ct.name} {image.array.shape}, median of {args.rounds} interleaved rounds (s/volume)")
    best: dict[str, float] = {}
    for backend, precision, form in RUNTIMES:
        row = {name: timings[(backend, precision, form, name)].median for name in models
               if (backend, precision, form, name) in timings}
        if len(row) == len(models):
            u, c = row["uncompressed"], row[f"DF {args.df}"]
            print(f"  {backend} {precision} {form}: uncompressed {u:.2f} s, DF {args.df} {c:.2f} s -> {u / c:.2f}x")
            best["uncompressed"] = min(best.get("uncompressed", u), u)
            best["compressed"] = min(best.get("compressed", c), c)
    if best:
        print(f"best compressed vs best uncompressed: {best['uncompressed'] / best['compressed']:.2f}x "
              f"({best['compressed']:.2f} s vs {best['uncompressed']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
