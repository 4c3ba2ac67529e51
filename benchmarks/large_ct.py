#!/usr/bin/env python
"""Whole-CT segmentation of clinical-size scans: time, peak RSS and the non-network share, uncompressed vs DF 0.3.

Makes the example CT stretched onto 512×512×Z grids at 0.8×0.8×1.0 mm (Z = 900 by default, and 1/4 and 1/2 of it
to show how time and memory grow with the volume; int16, in a temporary folder), exports the model uncompressed and
at ``--df`` (random weights are fine for timing), and segments each CT with each export as ``tuckertrt segment``
does, each run in a fresh process (its peak RSS is that run's alone), in interleaved rounds. Prints per run: seconds
from reading the CT to the written labels (model loading apart), the network's seconds and the non-network
share, each stage's seconds, and peak RSS; then per size the DF speedup end to end.

    python benchmarks/large_ct.py [--model ts-3mm] [--df 0.3] [--depths 225 450 900] [--rounds 1]
        [--backend openvino --precision bf16] [--exports DIR] [--keep DIR]

``--exports DIR`` reuses (or writes) ``DIR/uncompressed`` and ``DIR/df<DF>`` (``tuckertrt export`` folders).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tuckertrt.bench.scaled_ct import LARGE_SHAPE, LARGE_SPACING, make_scaled_ct
from tuckertrt.bench.whole_ct import WholeCTRun, isolated_whole_ct

MB = 1 << 20


def export(model: str, df: float | None, dest: Path) -> Path:
    if not (dest / "manifest.json").is_file():
        args = [sys.executable, "-m", "tuckertrt", "export", model, "-o", str(dest), "--no-fp16", "--no-verify"]
        subprocess.run(args + (["--df", str(df)] if df else []), check=True, capture_output=True)
    return dest


def describe(run: WholeCTRun) -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in run.stages.items())
    return (f"{run.seconds:6.2f} s (network {run.network_seconds:6.2f} s, non-network {run.non_network_share:4.0%}), "
            f"peak RSS {run.peak_rss / MB:5.0f} MiB, {run.tiles} tiles; load {run.load_seconds:.1f} s; {stages}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--df", type=float, default=0.3)
    ap.add_argument("--depths", type=int, nargs="+", default=[LARGE_SHAPE[2] // 4, LARGE_SHAPE[2] // 2,
                                                               LARGE_SHAPE[2]])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--exports", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated CTs in this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exports = args.exports or work / "exports"
        models = {"uncompressed": export(args.model, None, exports / "uncompressed"),
                  f"DF {args.df}": export(args.model, args.df, exports / f"df{args.df}")}
        cts = {}
        for depth in args.depths:
            shape = (*LARGE_SHAPE[:2], depth)
            path = (args.keep or work) / f"ct_{'x'.join(map(str, shape))}.nii.gz"
            cts[shape] = path if path.is_file() else make_scaled_ct(path, shape, LARGE_SPACING)
        runs: dict[tuple, list[WholeCTRun]] = {}
        for _ in range(args.rounds):
            for shape, ct in cts.items():
                for name, folder in models.items():
                    run = isolated_whole_ct(ct, args.model, args.backend, folder, args.precision,
                                            work / "seg.nii.gz", args.threads)
                    runs.setdefault((shape, name), []).append(run)
                    print(f"{'x'.join(map(str, shape))} {name}: {describe(run)}", flush=True)
    print(f"\n{args.model} on {args.backend} {args.precision}, best of {args.rounds} round(s), fresh process per run, "
          f"CT voxels {LARGE_SPACING} mm")
    best = {key: min(r, key=lambda run: run.seconds) for key, r in runs.items()}
    for shape in cts:
        volume = shape[0] * shape[1] * shape[2] / 1e6
        line = [f"{'x'.join(map(str, shape))} ({volume:.0f} M voxels):"]
        for name in models:
            run = best[(shape, name)]
            line.append(f"{name} {run.seconds:.2f} s, {run.peak_rss / MB:.0f} MiB, non-network "
                        f"{run.non_network_share:.0%};")
        uncompressed, compressed = (best[(shape, name)].seconds for name in models)
        line.append(f"DF speedup {uncompressed / compressed:.2f}x")
        print(" ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
