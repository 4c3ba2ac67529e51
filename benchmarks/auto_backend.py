"""``segment --backend auto`` against the explicit runtimes, on one CT, in one process.

Prints, side by side: the first run (export + parity check + timing + segmentation, empty cache), the second run
(cached: open + segmentation) and each explicit CPU runtime on the same exported model, with the second run's
ratio to the fastest explicit one. Segmentation timings are interleaved over ``--rounds``.

    python benchmarks/auto_backend.py [--model fixture-3mm] [--ct CT.nii.gz] [--rounds 2]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

from tuckertrt.backends.registry import backend_class, open_backend
from tuckertrt.data import example_ct
from tuckertrt.decomposition import load_model
from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.manifest import tool_versions
from tuckertrt.inference.backend_choice import CPU_CANDIDATES
from tuckertrt.inference.segment import Runner, segment_volume
from tuckertrt.inference.timing import interleaved
from tuckertrt.bench.auto_backend import RUNTIMES, open_auto, runtime_facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fixture-3mm")
    parser.add_argument("--ct", default=str(example_ct()))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.model)
    facts = runtime_facts()
    print(f"{args.model} on {args.ct}; CPU {facts['cpu']}, {facts['threads']} threads, {platform.platform()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in tool_versions(RUNTIMES).items()))
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        first = open_auto(model, cache)
        segment_volume(args.ct, first.runner)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = open_auto(model, cache)
        segment_volume(args.ct, second.runner)
        second_s = time.perf_counter() - start
        assert not second.exported
        runs = {"auto (cached)": lambda: segment_volume(args.ct, second.runner)}
        for backend, precision in CPU_CANDIDATES:
            if not backend_class(backend).available():
                continue
            try:
                runner = Runner(model.spec, open_backend(backend, first.entry / "onnx", precision, head="auto"))
            except TuckerTRTError as e:
                print(f"{backend} {precision}: skipped ({e})")
                continue
            runs[f"{backend} {runner.predictor.precision}"] = lambda r=runner: segment_volume(args.ct, r)
        timings = interleaved(runs, rounds=args.rounds, warmup=0)
    explicit = {k: t for k, t in timings.items() if k != "auto (cached)"}
    fastest = min(explicit, key=lambda k: explicit[k].median)
    print(f"auto chose {first.choice.backend} {first.choice.precision}: {first.choice.reason}")
    print(f"{'run':<28}{'seconds':>10}")
    print(f"{'first run (empty cache)':<28}{first_s:>10.1f}   of which export+check+timing {first.seconds:.1f}")
    print(f"{'second run (cached)':<28}{second_s:>10.1f}   of which opening {second.seconds:.2f}")
    for name, timing in timings.items():
        print(f"{'segment, ' + name:<28}{timing.median:>10.2f}")
    ratio = timings["auto (cached)"].median / explicit[fastest].median
    print(f"auto (cached) / fastest explicit ({fastest}): {ratio:.3f}")


if __name__ == "__main__":
    main()
