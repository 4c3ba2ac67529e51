#!/usr/bin/env python
"""Does the layout in which the logits leave the graph matter? OpenVINO bf16, TS-3mm, uncompressed vs DF 0.3.

OpenVINO computes in a blocked/channels-last layout; a planar NCDHW output costs a full Reorder of the 118-channel
logits. This appends a Transpose so the graph returns NDHWC, and times, in one process with interleaved rounds,
(a) the inference alone and (b) inference plus the sliding window's Gaussian-weighted accumulation done in the
output's own layout.

    python benchmarks/output_layout.py [--df 0.3] [--rounds 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import helper

from tuckertrt.bench.timing import interleaved
from tuckertrt.decomposition import decompose
from tuckertrt.graph.export import torch_to_onnx
from tuckertrt.models import load_model


def channels_last_output(graph: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with its (N, C, *spatial) output transposed to (N, *spatial, C)."""
    out = onnx.ModelProto()
    out.CopyFrom(graph)
    value = out.graph.output[0]
    for node in out.graph.node:
        node.output[:] = [f"{o}_ncdhw" if o == value.name else o for o in node.output]
    rank = len(value.type.tensor_type.shape.dim)
    perm = [0, *range(2, rank), 1]
    out.graph.node.append(helper.make_node("Transpose", [f"{value.name}_ncdhw"], [value.name], perm=perm))
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for i, p in enumerate(perm):
        value.type.tensor_type.shape.dim[i].dim_value = dims[p]
    return out


def main() -> int:
    import openvino as ov

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--df", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    base = load_model(args.model)
    spec = base.spec
    shape = (1, spec.input_channels, *spec.patch_size)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": args.threads}
    infer, accumulate = {}, {}
    for name, model in (("DF 1", base), (f"DF {args.df}", decompose(base, df=args.df))):
        graph = torch_to_onnx(model.network, shape, spec.num_classes, 17, False, tuple(2 * d for d in spec.downsampling))
        for layout, g in (("NCDHW", graph), ("NDHWC", channels_last_output(graph))):
            request = core.compile_model(core.read_model(g.SerializeToString(), b""), "CPU", config).create_infer_request()
            last = layout == "NDHWC"
            acc = np.zeros((*spec.patch_size, spec.num_classes) if last else (spec.num_classes, *spec.patch_size),
                           np.float32)
            gauss = np.ones((*spec.patch_size, 1) if last else (1, *spec.patch_size), np.float32)
            infer[(name, layout)] = lambda r=request: r.infer({0: x})[0]
            accumulate[(name, layout)] = lambda r=request, a=acc, w=gauss: np.add(a, r.infer({0: x})[0][0] * w, out=a)
    for title, runs in (("inference only", infer), ("inference + Gaussian accumulation", accumulate)):
        t = interleaved(runs, rounds=args.rounds, warmup=1)
        print(f"{title} (median s/patch, {args.rounds} interleaved rounds):")
        for layout in ("NCDHW", "NDHWC"):
            u, c = t[("DF 1", layout)].median, t[(f"DF {args.df}", layout)].median
            print(f"  {layout}: DF 1 {u:.3f} s, DF {args.df} {c:.3f} s -> {u / c:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
