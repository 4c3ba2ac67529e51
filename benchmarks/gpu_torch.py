#!/usr/bin/env python
"""PyTorch/cuDNN latency of the TS-3mm network on a CUDA GPU, uncompressed vs decomposed, side by side.

One process, interleaved rounds, CUDA events; random weights (only the architecture matters for timing, as in the
paper's Appendix E). Modes: FP32 (cuDNN; PyTorch's default allows TF32 in convolutions), FP16 autocast (what
TotalSegmentator runs), BF16 autocast, FP16 autocast + channels-last, FP16 autocast replayed as a CUDA graph, FP16
autocast through ``torch.compile`` (Inductor fuses InstanceNorm + LeakyReLU into generated kernels).

    python benchmarks/gpu_torch.py [--model ts-3mm] [--df 1 0.5 0.3 0.1] [--rounds 3] [--iters 10] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from tuckertrt.decomposition import decompose, load_model

MODES = ("fp32", "fp16", "bf16", "fp16-channels-last", "fp16-cuda-graph", "fp16-compile")


def make_runner(network: torch.nn.Module, x: torch.Tensor, mode: str):
    net = network
    if "channels-last" in mode:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode.split("-")[0])
    if mode.endswith("compile"):
        net = torch.compile(net)

    def forward() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            return net(x)

    if mode.endswith("cuda-graph"):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward()
        return graph.replay
    return forward


def time_ms(run, iters: int) -> list[float]:
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--df", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.1])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (run this on a GPU machine)")
        return 0
    torch.backends.cudnn.benchmark = True
    base = load_model(args.model)
    x = torch.randn(1, base.spec.input_channels, *base.spec.patch_size, device="cuda")
    runners = {}
    for df in args.df:
        net = (base if df >= 1 else decompose(base, df=df)).network.cuda().eval()
        for mode in args.modes:
            runners[(df, mode)] = make_runner(net, x, mode)
            time_ms(runners[(df, mode)], 5)  # warm-up (and cuDNN autotuning)
    samples: dict[tuple[float, str], list[float]] = {k: [] for k in runners}
    for _ in range(args.rounds):  # interleaved: every configuration once per round
        for key, run in runners.items():
            samples[key] += time_ms(run, args.iters)
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {args.model} patch "
          f"{'×'.join(map(str, base.spec.patch_size))}, median of {args.rounds}×{args.iters} (ms)")
    best_uncompressed = min(statistics.median(samples[(1.0, m)]) for m in args.modes) if 1.0 in args.df else None
    print(f"{'DF':>5} " + " ".join(f"{m:>20}" for m in args.modes) + "   vs best uncompressed")
    rows = []
    for df in args.df:
        med = {m: statistics.median(samples[(df, m)]) for m in args.modes}
        cells = []
        for m in args.modes:
            ratio = statistics.median(samples[(1.0, m)]) / med[m] if 1.0 in args.df else float("nan")
            cells.append(f"{med[m]:8.2f} ({ratio:4.2f}×)")
        best = min(med.values())
        vs_best = f"{best_uncompressed / best:.2f}×" if best_uncompressed else "-"
        print(f"{df:>5} " + " ".join(f"{c:>20}" for c in cells) + f"   {vs_best}")
        rows.append({"df": df, "median_ms": med, "stdev_ms": {m: statistics.pstdev(samples[(df, m)])
                                                              for m in args.modes}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"gpu": gpu, "torch": torch.__version__, "model": args.model, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
