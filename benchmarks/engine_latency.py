#!/usr/bin/env python
"""TensorRT engine latency of the TS-3mm network, uncompressed vs decomposed, FP32 and FP16, side by side.

Exports each variant at the model's patch, builds one engine per (DF, precision), loads them all, then times them
in interleaved rounds (each round runs every engine once: ``--iters`` executions measured with CUDA events on the
resident buffers, no host copies), so the ratios compare engines under the same GPU state. Random weights: only
the architecture matters for timing. Needs a CUDA GPU, TensorRT (or ``--target rtx`` on a GPU TensorRT-RTX
supports) and cuda-python.

    python benchmarks/engine_latency.py [--df 1 0.3] [--target trt|rtx] [--rounds 3] [--iters 10] [--json OUT]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from tuckertrt.backends.trt_runner import TensorRTBackend
from tuckertrt.decomposition import decompose, load_model
from tuckertrt.engines import BuildOptions, build_engine, engine_support
from tuckertrt.engines.gpu import current_gpu
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import write_json_atomic
from tuckertrt.parity.export import export_model

PRECISIONS = ("fp32", "fp16")


def build_all(model_ref: str, dfs: list[float], target: str, sms: tuple[int, ...], out: Path,
              log=print) -> dict[tuple[float, str], Path]:
    base = load_model(model_ref)
    engines = {}
    for df in dfs:
        model = base if df >= 1 else decompose(base, df=df)
        export = export_model(model, out / f"onnx_df{df:g}", verify=False)
        for precision in PRECISIONS:
            result = build_engine(export.out_dir, out, BuildOptions(target=target, fp16=precision == "fp16",
                                                                    sms=sms))
            log(f"built {result.engine.name} in {result.sidecar['build_seconds']} s "
                f"({result.sidecar['engine_bytes'] / 2**20:.1f} MiB)")
            engines[(df, precision)] = result.engine
    return engines


def time_interleaved(engines: dict[tuple[float, str], Path], rounds: int, iters: int) -> dict[tuple, list[float]]:
    backends = {key: TensorRTBackend.load(path) for key, path in engines.items()}
    try:
        for backend in backends.values():
            backend.time_execute(warmup=3, iterations=1)
        times: dict[tuple, list[float]] = {key: [] for key in backends}
        for _ in range(rounds):
            for key, backend in backends.items():
                times[key] += backend.time_execute(warmup=1, iterations=iters)
        return times
    finally:
        for backend in backends.values():
            backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ts-3mm")
    parser.add_argument("--df", type=float, nargs="+", default=[1.0, 0.3])
    parser.add_argument("--target", choices=("trt", "rtx"), default="trt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="keep ONNX and engines here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    ok, reason = engine_support(args.target)
    gpu = current_gpu()
    if not ok or gpu is None:
        print(f"engine benchmark skipped: {reason if not ok else 'no CUDA GPU found'}", file=sys.stderr)
        return 3
    print(f"{gpu.name} (SM{gpu.sm}); {reason}")
    sms = (gpu.sm,) if args.target == "rtx" else ()
    try:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as scratch:
            out = args.out or Path(scratch)
            engines = build_all(args.model, args.df, args.target, sms, out)
            times = time_interleaved(engines, args.rounds, args.iters)
    except TuckerTRTError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    rows = {key: (statistics.mean(t), statistics.stdev(t) if len(t) > 1 else 0.0) for key, t in times.items()}
    reference = max(args.df)
    print(f"\n{args.model} per-patch engine latency, {args.rounds}x{args.iters} executions, mean ± std (ms)")
    print(f"{'DF':>6} " + " ".join(f"{p:>22}" for p in PRECISIONS) + " " + " ".join(
        f"{'speed-up ' + p:>14}" for p in PRECISIONS))
    for df in args.df:
        cells = [f"{rows[(df, p)][0]:>12.2f} ± {rows[(df, p)][1]:<7.2f}" for p in PRECISIONS]
        ratios = [f"{rows[(reference, p)][0] / rows[(df, p)][0]:>13.2f}x" for p in PRECISIONS]
        print(f"{df:>6g} " + " ".join(cells) + " " + " ".join(ratios))
    if args.json:
        write_json_atomic(args.json, {"gpu": gpu.to_json(), "target": args.target, "model": args.model,
                                      "results": [{"df": df, "precision": p, "mean_ms": m, "std_ms": s,
                                                   "engine": engines[(df, p)].name}
                                                  for (df, p), (m, s) in rows.items()]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
