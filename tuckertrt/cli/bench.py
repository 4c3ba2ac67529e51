"""``tuckertrt bench``: per-patch latency of every backend × precision, uncompressed vs compressed."""
from __future__ import annotations

from pathlib import Path

import click

from tuckertrt.backends.registry import ARTIFACT_BACKENDS, AUTO, ONNX_BACKENDS
from tuckertrt.cli.backend_option import cache_dir_option
from tuckertrt.cli.options import gate_options, min_rank_option, model_argument, policy_option
from tuckertrt.errors import UsageError

# Precisions each backend is benchmarked in when --precision does not say (and the ones it accepts).
DEFAULT_PRECISIONS = {"onnxruntime": ["fp32"], "openvino": ["fp32", "bf16"], "tensorrt": ["fp16"]}
ACCEPTED = {"onnxruntime": {"fp32", "fp16", "int8"}, "openvino": {"fp32", "bf16", "fp16", "int8"},
            "tensorrt": {"fp32", "fp16", "int8"}}


def precisions_per_backend(backends: list[str], requested: tuple[str, ...]) -> dict[str, list[str]]:
    """``--precision P`` applies to every backend that accepts P; ``--precision backend:P`` to one backend.
    ``auto`` chooses its own precision."""
    named = [b for b in backends if b != AUTO]
    chosen: dict[str, list[str]] = {AUTO: [AUTO]} if AUTO in backends else {}
    if not requested:
        return {**chosen, **{b: DEFAULT_PRECISIONS[b] for b in named}}
    chosen.update({b: [] for b in named})
    for item in requested:
        backend, _, precision = item.rpartition(":")
        if backend == AUTO:
            raise UsageError(f"--precision {item}: auto chooses its own precision")
        targets = [backend] if backend else named
        if backend and backend not in chosen:
            raise UsageError(f"--precision {item}: backend {backend} is not benchmarked (add --backend {backend})")
        if not any(_accepts(b, precision) for b in targets):
            raise UsageError(f"--precision {item}: no benchmarked backend runs {precision}")
        for b in targets:
            if _accepts(b, precision) and precision not in chosen[b]:
                chosen[b].append(precision)
    return chosen


def _accepts(backend: str, precision: str) -> bool:
    """``precision`` is one ``backend`` runs; ONNX Runtime and OpenVINO also take ``P+graph-head``/``P+exported``."""
    from tuckertrt.bench.run import GRAPH_FORM_BACKENDS, GRAPH_FORMS

    base, _, form = precision.partition("+")
    return base in ACCEPTED[backend] and (not form or (form in GRAPH_FORMS and backend in GRAPH_FORM_BACKENDS))


@click.command()
@model_argument
@click.option("--df", "dfs", type=click.FloatRange(0, 1, min_open=True), multiple=True,
              help="Decomposition factors to compare (1 = uncompressed; always included). Repeatable.")
@click.option("--backend", "backends", type=click.Choice([AUTO, *ARTIFACT_BACKENDS]), multiple=True,
              help="Backends to run (default: onnxruntime and openvino). Repeatable. auto: what `segment` runs by "
                   "default (per variant, the runtime chosen and cached for it, on its cached export), to compare "
                   "with the runtimes named beside it.")
@cache_dir_option
@click.option("--precision", "precisions", multiple=True,
              help="fp32 / bf16 / fp16 / int8, or backend:precision. ONNX Runtime and OpenVINO run the deployed "
                   "graph (exact rewrites, head after the sliding window); P+graph-head keeps the head in the "
                   "graph, P+exported runs the exported graph as is. Repeatable. Default: ORT fp32, OpenVINO fp32 "
                   "and bf16.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Interleaved timed rounds.")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True, help="Warm-up runs per config.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads per runtime (default: its own).")
@click.option("--profile", is_flag=True, help="Also profile every configuration per node type and layer.")
@gate_options
@click.option("--variant", "variant_paths", multiple=True, type=click.Path(exists=True),
              help="A compressed checkpoint of MODEL (e.g. `tuckertrt finetune`'s model.pt) to benchmark beside "
                   "the DFs. Repeatable.")
@click.option("--ct", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CT volume (NIfTI, at the model's spacing) for the parity patch (default: the example CT).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reference labels of --ct (NIfTI, TotalSegmentator ids) for each row's Dice against them "
                   "(default with the example CT: TotalSegmentator's own labels of it).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Calibration case list (JSON) for int8; default: the bundled ts_example list.")
@click.option("--optimize", type=click.Choice(["none", "latency"]), default="none", show_default=True,
              help="latency: also benchmark, per DF, ranks/folds chosen per layer by timing on the target.")
@click.option("--target", default="openvino:bf16", show_default=True,
              help="backend:precision that --optimize latency times layers on.")
@min_rank_option
@policy_option
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), required=True,
              help="Directory for bench.json, bench.md and the exported ONNX models.")
def bench(model: str, dfs: tuple[float, ...], backends: tuple[str, ...], cache_dir: Path | None,
          precisions: tuple[str, ...], rounds: int, warmup: int, threads: int | None, profile: bool, min_dice: float,
          min_class_dice: float, variant_paths: tuple[str, ...], ct: str | None, reference: str | None,
          calibration: str | None, optimize: str, target: str, min_rank: int, policy: str, output: str) -> None:
    """Benchmark MODEL uncompressed and at each --df on every backend × precision, in one process."""
    from tuckertrt.bench import BenchOptions, df_variants, run_bench
    from tuckertrt.bench.variants import checkpoint_variants, latency_variants
    from tuckertrt.bench.report import markdown, profile_markdown
    from tuckertrt.cli.preflight import check_run_folder, marked_output
    from tuckertrt.fileio import ensure_output_dir, write_bytes_atomic, write_json_atomic
    from tuckertrt.decomposition import load_model
    from tuckertrt.data import example_reference
    from tuckertrt.inference.patches import ct_patch, default_patch
    from tuckertrt.parity.compare import reference_patch
    from tuckertrt.parity.gate import ParityGate

    chosen = list(backends or ONNX_BACKENDS)
    options = BenchOptions(backends=chosen, precisions=precisions_per_backend(chosen, precisions), rounds=rounds,
                           warmup=warmup, threads=threads, profile=profile,
                           gate=ParityGate(min_dice, min_class_dice), cache_dir=cache_dir)
    if any(p.endswith("int8") for p in precisions):
        from tuckertrt.data import calibration_list
        from tuckertrt.inference.calibration import load_calibration

        options.calibration = load_calibration(calibration or calibration_list())
    if reference and not ct:
        raise UsageError("--reference labels a --ct; give both")
    check_run_folder(output, [model, *variant_paths], [ct, reference, calibration])
    loaded = load_model(model)
    recovered = checkpoint_variants(loaded, variant_paths)
    patch, label = (ct_patch(loaded.spec, ct_path=ct), f"CT {Path(ct).name}") if ct else default_patch(loaded.spec)
    truth = reference or (None if ct else example_reference())
    truth_patch = None if truth is None else reference_patch(loaded.spec, truth)
    with marked_output(output):
        out = ensure_output_dir(output)
        all_dfs = sorted({1.0, *dfs}, reverse=True)
        variants = df_variants(loaded, all_dfs, min_rank, policy) + recovered
        if optimize == "latency":
            target_backend, _, target_precision = target.partition(":")
            if target_backend not in ("openvino", "onnxruntime"):
                raise UsageError(f"--target {target}: layers can be timed on openvino or onnxruntime")
            selected = latency_variants(loaded, all_dfs, target_backend, target_precision or "fp32", threads, min_rank,
                                        log=click.echo)
            variants += selected
            for v in selected:
                write_json_atomic(out / f"selection_{v.key.replace(' ', '_')}.json", v.model.extra["selection"])
        result = run_bench(variants, options, out, patch, label, log=click.echo, reference_labels=truth_patch)
        result["model"] = loaded.describe()
        write_json_atomic(out / "bench.json", result)
        text = markdown(result) + ("\n" + profile_markdown(result) if profile else "")
        write_bytes_atomic(out / "bench.md", text.encode())
        click.echo(text)
