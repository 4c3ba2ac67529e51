#!/usr/bin/env python
"""Peak memory (RSS) of ONNX Runtime inference on one TS-3mm patch (1x1x112x112x128): uncompressed vs DF 0.3.

Each graph runs in its own child process, so each peak (``ru_maxrss``) belongs to one model only; both are
measured in the same invocation and printed side by side with their ratio.

    python benchmarks/ort_memory.py [--df 0.3] [--threads N] [--keep DIR]

The graphs are exported (random weights, no parity checks) into a temporary directory, or into DIR with --keep
(reused on the next run when it already holds them).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(onnx_dir: str, threads: int | None) -> dict:
    """In this (child) process: load, run one patch, report RSS after load and the peak."""
    import numpy as np
    import psutil

    from tuckertrt.backends.ort_runner import OrtBackend

    process = psutil.Process()
    before = process.memory_info().rss
    backend = OrtBackend.load(Path(onnx_dir), threads=threads)
    loaded = process.memory_info().rss
    patch = np.random.default_rng(0).standard_normal(backend.input_shape, dtype=np.float32)
    start = time.perf_counter()
    logits = backend.run(patch)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_start_mb": before / 2**20, "rss_loaded_mb": loaded / 2**20, "peak_rss_mb": peak / 2**20,
            "logits_mb": logits.nbytes / 2**20, "seconds": seconds, "threads": backend.threads}


def export_variants(root: Path, df: float) -> dict[str, Path]:
    from tuckertrt.decomposition import decompose
    from tuckertrt.parity.export import export_model
    from tuckertrt.models import load_model

    model = load_model("ts-3mm")
    variants = {"uncompressed": (model, root / "ts-3mm_df1"),
                f"DF {df:g}": (decompose(model, df=df), root / f"ts-3mm_df{df:g}")}
    for variant, out in variants.values():
        if not (out / "model.onnx").is_file():
            export_model(variant, out, fp16=False, verify=False)
    return {label: out for label, (_, out) in variants.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--df", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="export into (and reuse) this directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.threads)))
        return
    with tempfile.TemporaryDirectory(prefix="ort-memory-") as tmp:
        dirs = export_variants(args.keep or Path(tmp), args.df)
        rows = {}
        for label, onnx_dir in dirs.items():
            cmd = [sys.executable, __file__, "--child", str(onnx_dir)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            rows[label] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(f"{'model':<14} {'RSS loaded':>11} {'peak RSS':>10} {'logits':>8} {'1 patch':>8}")
    for label, r in rows.items():
        print(f"{label:<14} {r['rss_loaded_mb']:>8.0f} MB {r['peak_rss_mb']:>7.0f} MB {r['logits_mb']:>5.0f} MB "
              f"{r['seconds']:>6.2f} s")
    first, second = rows.values()
    print(f"peak RSS ratio uncompressed / DF {args.df:g}: {first['peak_rss_mb'] / second['peak_rss_mb']:.2f}x "
          f"(threads {first['threads']})")


if __name__ == "__main__":
    main()
