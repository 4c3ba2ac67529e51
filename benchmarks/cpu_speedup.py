#!/usr/bin/env python
"""TS-3mm per-patch CPU table: uncompressed vs DF 0.5 / 0.3 / 0.1 (plain Tucker-2; latency-aware ranks/folds with
--latency-df)
on ONNX Runtime f32, OpenVINO f32 and bf16 as deployed (exact graph rewrites, head after the sliding window), and
ONNX Runtime f32 / OpenVINO bf16 running the exported graph unchanged ("+exported"; and OpenVINO/ORT int8 with
--int8), measured side by side in
ONE process, interleaved rounds; ratios, not absolute times (the machine is shared).

Timing uses TS-3mm with random weights (only the architecture matters); each row's quality is the Dice (mean,
worst class) and argmax agreement of that configuration with the uncompressed f32 model on a real-CT patch, and
its Dice against TotalSegmentator's own labels of that patch — of the trained
fixture model ``fixture-3mm`` (zero-shot; the same DF rule, and the same latency-aware procedure run on its own
layers) when the timed model has random weights and the fixture exists, else of the timed model itself
(``--model TRAINED --variant CKPT``: a trained network and its recovered checkpoints).

    python benchmarks/cpu_speedup.py -o bench-out [--df 0.5 0.3 0.1] [--rounds 3] [--threads 2] [--int8]
        [--latency-df 0.3] [--quick] [--model TRAINED --variant CKPT ...]

``--quick``: DF 0.3 only, OpenVINO bf16 only, deployed and exported (a few minutes). Writes OUT/bench.json and OUT/bench.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuckertrt.bench import BenchOptions, df_variants, run_bench
from tuckertrt.bench.report import markdown, profile_markdown
from tuckertrt.bench.run import headline, speedups
from tuckertrt.bench.variants import Variant, checkpoint_variants, latency_variants
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.select import selected_model
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import ensure_output_dir, write_bytes_atomic, write_json_atomic
from tuckertrt.decomposition import load_model
from tuckertrt.data import calibration_list, example_reference
from tuckertrt.inference.patches import default_patch
from tuckertrt.parity.compare import reference_patch
from tuckertrt.parity.gate import DEFAULT_GATE, ParityGate


def saved_selection(model, path: Path) -> Variant:
    from tuckertrt.fileio import read_json

    selection = read_json(path, "rank selection")
    variant = Variant(f"DF {selection['df']:g} latency", selection["df"], selected_model(model, selection))
    variant.model.extra["selection"] = selection
    return variant


def fixture_twins(variants: list[Variant], threads: int, log) -> list[Variant] | None:
    """The same configurations built from the trained fixture (plain DF: same rule; latency-aware: the same
    selection procedure run on the fixture's own layers), or None when the fixture is missing."""
    try:
        fixture = load_model("fixture-3mm")
    except TuckerTRTError as e:
        log(f"fixture-3mm not available ({e}); agreement is measured on the timed model")
        return None
    twins = []
    for v in variants:
        if not v.compressed:
            twins.append(Variant(v.key, v.df, fixture))
        elif "selection" in v.model.extra:
            twins += latency_variants(fixture, [v.df], "openvino", "bf16", threads, log=log)
        else:
            twins.append(Variant(v.key, v.df, decompose(fixture, df=v.df, min_rank=v.model.decomposition["min_rank"])))
    return twins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--model", default="ts-3mm")
    parser.add_argument("--df", nargs="+", type=float, default=[0.5, 0.3, 0.1])
    parser.add_argument("--latency-df", nargs="*", type=float, default=[],
                        help="DFs that also get latency-aware ranks/folds (timed on OpenVINO bf16; each adds a "
                             "session per column, and all sessions of a runtime are held at once)")
    parser.add_argument("--selection", nargs="*", type=Path, default=[],
                        help="reuse saved latency selections (selection_*.json of an earlier run) instead of "
                             "timing layers again; replaces --latency-df")
    parser.add_argument("--variant", nargs="*", type=Path, default=[],
                        help="recovered checkpoints of --model (tuckertrt finetune outputs) as extra rows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-dice", type=float, default=DEFAULT_GATE.min_dice, help="parity gate, as build's")
    parser.add_argument("--min-class-dice", type=float, default=DEFAULT_GATE.min_class_dice)
    parser.add_argument("--int8", action="store_true", help="also OpenVINO int8 (NNCF) and ORT int8 (Q/DQ)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731

    out = ensure_output_dir(args.output)
    model = load_model(args.model)
    dfs = [0.3] if args.quick else args.df
    variants = df_variants(model, [1.0, *dfs]) + checkpoint_variants(model, args.variant)
    if args.selection:
        variants += [saved_selection(model, path) for path in args.selection]
    else:
        variants += latency_variants(model, [1.0, *args.latency_df], "openvino", "bf16", args.threads, log=log)
        for v in variants:
            if "selection" in v.model.extra:
                write_json_atomic(out / f"selection_{v.key.replace(' ', '_')}.json", v.model.extra["selection"])
    precisions = {"openvino": ["bf16", "bf16+exported"]} if args.quick else \
        {"onnxruntime": ["fp32", "fp32+exported"], "openvino": ["fp32", "bf16", "bf16+exported"]}
    options = BenchOptions(list(precisions), precisions, rounds=args.rounds, threads=args.threads,
                           profile=args.profile, gate=ParityGate(args.min_dice, args.min_class_dice))
    if args.int8:
        from tuckertrt.inference.calibration import load_calibration

        options.calibration = load_calibration(calibration_list())
        for backend in precisions:
            precisions[backend].append("int8")
    patch, label = default_patch(model.spec)
    result = run_bench(variants, options, out, patch, label, log=log,
                       reference_labels=reference_patch(model.spec, example_reference()))
    twins = None if model.trained else fixture_twins(variants, args.threads, log)
    if twins is not None:
        parity = run_bench(twins, BenchOptions(options.backends, precisions, rounds=1, warmup=0, threads=args.threads,
                                               gate=options.gate, calibration=options.calibration),
                           out / "fixture", *default_patch(twins[0].model.spec), log=log,
                           reference_labels=reference_patch(twins[0].model.spec, example_reference()))
        by_key = {(r["variant"], r["backend"], r["requested_precision"]): r for r in parity["configs"]}
        for row in result["configs"]:
            twin = by_key.get((row["variant"], row["backend"], row["requested_precision"]))
            if twin:
                row.update(agreement=twin["agreement"], dice=twin["dice"], worst_class_dice=twin["worst_class_dice"],
                           dice_labels=twin["dice_labels"], passes_gate=twin["passes_gate"],
                           agreement_model="fixture-3mm")
        result["parity_input"] = f"{parity['parity_input']} (fixture-3mm, zero-shot)"
        result["speedups"], result["headline"] = speedups(result["configs"]), headline(result["configs"])
    result["model"] = model.describe()
    write_json_atomic(out / "bench.json", result)
    text = markdown(result) + ("\n" + profile_markdown(result) if args.profile else "")
    write_bytes_atomic(out / "bench.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
