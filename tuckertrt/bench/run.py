"""The benchmark: every available backend × precision, uncompressed and compressed, in one process.

Per backend, all of its configurations are loaded together and timed in interleaved rounds (after warm-ups), so
that other load on the machine hits them alike; ratios, not absolute times, are the result. Every configuration
is also run once on a real-CT patch and compared with the uncompressed f32 PyTorch model (Dice over the
reference's classes, and argmax agreement): the build's parity gate (``ParityGate``), applied to that patch.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.backends.base import Backend
from tuckertrt.backends.ort_runner import resolve_onnx
from tuckertrt.backends.registry import AUTO, backend_class, open_backend
from tuckertrt.bench.parity import dice_summary, format_score
from tuckertrt.inference.labels import agreement, argmax_labels, output_labels
from tuckertrt.bench.profiles import ort_profile, summarise
from tuckertrt.bench.timing import PeakRss, interleaved
from tuckertrt.bench.variants import Variant, export_variant
from tuckertrt.errors import TuckerTRTError
from tuckertrt.bench.auto_backend import open_auto
from tuckertrt.parity.gate import ParityGate

MB = 1 << 20
# How ONNX Runtime / OpenVINO run a graph: as deployed, or with the head / the whole graph as exported.
GRAPH_FORMS: dict[str, dict[str, Any]] = {"deployed": {"head": "auto"}, "graph-head": {"head": "graph"},
                                          "exported": {"rewrite": False, "head": "graph"}}
GRAPH_FORM_BACKENDS = ("onnxruntime", "openvino")
# backend -> (quantised file in the export dir, tuckertrt.quantization function, precision to load it in, how)
INT8_BUILDS = {"openvino": ("model_int8_nncf.xml", "quantize_openvino", "int8", "with NNCF"),
               "onnxruntime": ("model_int8_qdq.onnx", "quantize_qdq", "fp32", "to Q/DQ")}


@dataclass
class BenchOptions:
    backends: list[str]
    precisions: dict[str, list[str]]  # backend -> precisions
    rounds: int = 3
    warmup: int = 1
    threads: int | None = None
    profile: bool = False
    gate: ParityGate = field(default_factory=ParityGate)  # vs the uncompressed f32 model, on the patch
    calibration: Any = None  # an inference.calibration.CalibrationSet, needed for int8
    isolated_memory: bool = True  # measure the headline configurations' peak RSS in fresh processes
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache_dir: Path | None = None  # of the auto backend (default: tuckertrt.bench.auto_backend.cache_root)


def run_bench(variants: list[Variant], options: BenchOptions, out_dir: Path, patch: np.ndarray,
              patch_label: str, log=print, reference_labels: np.ndarray | None = None) -> dict[str, Any]:
    """Time and check every (variant, backend, precision); return the JSON-able result. ``reference_labels``
    (the patch's ground truth in the model's label ids, e.g. ``reference_patch``) adds each row's mean Dice
    against them (``dice_labels``)."""
    reference_model = next((v.model for v in variants if not v.compressed), None)
    if reference_model is None:
        raise TuckerTRTError("the benchmark needs the uncompressed model (DF 1) as its reference")
    log(f"reference: uncompressed f32 PyTorch on {patch_label}")
    reference = argmax_labels(open_backend("torch", reference_model, input_shape=patch.shape, device="cpu").run(patch))
    for v in variants:
        if v.onnx is None:
            start = time.perf_counter()
            export_variant(v, out_dir / "models")
            log(f"exported {v.key} in {time.perf_counter() - start:.1f} s")
        if AUTO in options.backends and v.auto is None:  # resolved as segment resolves its default
            auto = open_auto(v.model, options.cache_dir, log=log)
            auto.runner.predictor.close()
            v.auto = auto.cached
            log(f"auto for {v.key}: {auto.describe()}")
    configs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for backend in options.backends:
        if backend != AUTO and not backend_class(backend).available():
            skipped[backend] = "runtime not installed"
            continue
        configs += _bench_backend(backend, variants, options, patch, reference, log, reference_labels)
    result = {
        "patch_shape": list(patch.shape), "parity_input": patch_label, "gate": options.gate.to_json(),
        "reference_labels": reference_labels is not None,
        "rounds": options.rounds, "warmup": options.warmup, "threads": options.threads,
        "variants": [v.facts() for v in variants], "configs": configs, "skipped": skipped,
    }
    result["speedups"] = speedups(configs)
    result["headline"] = headline(configs)
    if options.isolated_memory:
        measure_headline_memory(result["headline"], variants, options, patch, log)
    return result


def measure_headline_memory(head: dict[str, Any], variants: list[Variant], options: BenchOptions,
                            patch: np.ndarray, log) -> None:
    """Peak RSS of one patch of the headline configurations, each in a fresh process (``isolated_peak_rss_mb``)."""
    from tuckertrt.bench.memory import isolated_peak_rss

    for row in (head["best_uncompressed"], head["best_compressed"]):
        if row is None:
            continue
        variant = next(v for v in variants if v.key == row["variant"])
        runtime, artifact, precision, opts = _load_args(row["backend"], variant, row["requested_precision"], options,
                                                        patch, log)
        opts = {**options.backend_options.get(row["backend"], {}), **opts}
        row["isolated_peak_rss_mb"] = round(isolated_peak_rss(runtime, artifact, precision, options.threads,
                                                              opts) / MB)
        log(f"  peak RSS of one patch, {row['variant']} {row['backend']} {row['precision']} alone: "
            f"{row['isolated_peak_rss_mb']} MB")


def _bench_backend(backend: str, variants: list[Variant], options: BenchOptions, patch: np.ndarray,
                   reference: np.ndarray, log, truth: np.ndarray | None) -> list[dict[str, Any]]:
    loaded: dict[tuple[str, str], Backend] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    extra = options.backend_options.get(backend, {})
    for precision in options.precisions.get(backend, ["fp32"]):
        for v in variants:
            key = (v.key, precision)
            try:
                runtime, artifact, load_precision, variant_opts = _load_args(backend, v, precision, options, patch,
                                                                             log)
                with PeakRss() as rss:
                    runner = open_backend(runtime, artifact, precision=load_precision, threads=options.threads,
                                          **extra, **variant_opts)
                    labels = output_labels(runner, runner.run(patch))
            except TuckerTRTError as e:
                log(f"  {backend} {precision} {v.key}: skipped ({e})")
                continue
            loaded[key] = runner
            agree = agreement(reference, labels)
            mean, worst = dice_summary(reference, labels)
            rows[key] = {"variant": v.key, "df": v.df, "compressed": v.compressed, "backend": backend,
                         "precision": precision if precision.startswith("int8") or "+" in precision
                         else f"{runtime} {runner.precision}" if backend == AUTO else runner.precision,
                         "requested_precision": precision,
                         "agreement": round(agree, 6), "dice": _round(mean), "worst_class_dice": _round(worst),
                         "passes_gate": options.gate.passes(mean, worst),
                         "dice_labels": None if truth is None else
                         _round(dice_summary(np.broadcast_to(truth, labels.shape), labels)[0]),
                         "peak_rss_mb": round(rss.peak / MB), "load_and_first_run_rss_mb":
                             round((rss.peak - rss.start) / MB), "describe": runner.describe()}
            if backend == AUTO:
                rows[key]["cache_entry"] = str(v.auto.entry)
            shown = rows[key]["precision"] if backend == AUTO else precision  # auto: the runtime it chose
            log(f"  {backend} {shown} {v.key}: Dice {format_score(mean)} (worst class "
                f"{format_score(worst)}), agreement {agree:.4f}")
    if not loaded:
        return []
    log(f"timing {len(loaded)} {backend} configurations, {options.rounds} interleaved rounds")
    timings = interleaved({k: (lambda r=r: r.run(patch)) for k, r in loaded.items()}, options.rounds,
                          options.warmup)
    for key, timing in timings.items():
        rows[key]["timing"] = timing.to_json()
        log(f"  {backend} {key[1]} {key[0]}: median {timing.median:.3f} s (spread {timing.spread:.0%})")
    for runner in loaded.values():
        runner.close()
    loaded.clear()
    gc.collect()
    if options.profile:
        for (variant_key, precision), row in rows.items():
            variant = next(v for v in variants if v.key == variant_key)
            runtime, artifact, load_precision, variant_opts = _load_args(backend, variant, precision, options,
                                                                         patch, log)
            row["profile"] = profile_config(runtime, artifact, load_precision, patch, options.threads,
                                            {**extra, **variant_opts})
    return list(rows.values())


def _load_args(backend: str, variant: Variant, precision: str, options: BenchOptions, patch: np.ndarray,
               log) -> tuple[str, Path, str, dict[str, Any]]:
    """The runtime, artifact, precision and options that load (variant, backend, precision). ``auto`` is what
    ``segment`` runs by default: the runtime chosen for the variant, on its cached export."""
    if backend == AUTO:
        chosen = variant.auto
        return chosen.choice.backend, chosen.entry / "onnx", chosen.choice.precision, GRAPH_FORMS["deployed"]
    return (backend, *_artifact(backend, variant, precision, options, patch, log))


def _artifact(backend: str, variant: Variant, precision: str, options: BenchOptions, patch: np.ndarray,
              log) -> tuple[Path, str, dict[str, Any]]:
    """What to load for (variant, precision) and with which extra backend options: the export dir, or for int8
    a quantised model calibrated on ``options.calibration`` (NNCF IR for OpenVINO, Q/DQ ONNX for ONNX Runtime,
    run as an fp32 graph there). ONNX Runtime and OpenVINO run the deployed form (rewritten graph, head after the
    sliding window: ``head="auto"``); ``+graph-head`` keeps the head in the graph, ``+exported`` runs the exported
    graph unchanged (no rewrites, head in the graph)."""
    precision, _, suffix = precision.partition("+")
    if suffix and suffix not in GRAPH_FORMS:
        raise TuckerTRTError(f"unknown precision variant +{suffix} (choose from {', '.join(GRAPH_FORMS)})")
    form = GRAPH_FORMS[suffix or "deployed"] if backend in GRAPH_FORM_BACKENDS else {}
    if precision != "int8":
        return variant.onnx, precision, form
    if options.calibration is None:
        raise TuckerTRTError("int8 needs a calibration case list")
    if backend not in INT8_BUILDS:
        raise TuckerTRTError(f"int8 on {backend} is built by its engine builder, not by the benchmark")
    import tuckertrt.quantization as quantization

    file_name, quantizer, load_precision, how = INT8_BUILDS[backend]
    target = variant.onnx / file_name
    if not target.exists():  # quantised once per export; calibration patches only when needed
        start = time.perf_counter()
        patches = options.calibration.patches(variant.model.spec, tuple(patch.shape[2:]))
        getattr(quantization, quantizer)(variant.onnx / "model.onnx", target, patches)
        log(f"  quantised {variant.key} {how} in {time.perf_counter() - start:.0f} s")
    return target, load_precision, form


def profile_config(backend: str, onnx: Path, precision: str, patch: np.ndarray, threads: int | None,
                   extra: dict[str, Any]) -> dict[str, Any] | None:
    """Per-node profile summary on ``backend`` (ORT profiling JSON, OpenVINO PERF_COUNT); None elsewhere."""
    if backend == "onnxruntime":
        return summarise(ort_profile(resolve_onnx(onnx, "fp32"), patch, threads))
    if backend == "openvino":
        runner = open_backend(backend, onnx, precision=precision, threads=threads, profile=True, **extra)
        runner.run(patch)
        runner.run(patch)
        summary = summarise(runner.profile())
        runner.close()
        return summary
    return None


def speedups(configs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per backend/precision: uncompressed median / variant median (the paper's Table 2); also set as each
    row's ``speedup``."""
    table: dict[str, dict[str, float]] = {}
    for row in configs:
        base = _uncompressed(configs, row["backend"], row["requested_precision"])
        if base is not None and "timing" in row:
            row["speedup"] = round(base["timing"]["median"] / row["timing"]["median"], 3)
            table.setdefault(f"{row['backend']} {row['precision']}", {})[row["variant"]] = row["speedup"]
    return table


def _uncompressed(configs: list[dict[str, Any]], backend: str, precision: str) -> dict[str, Any] | None:
    return next((r for r in configs if not r["compressed"] and r["backend"] == backend
                 and r["requested_precision"] == precision and "timing" in r), None)


def headline(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best (fastest) compressed vs best uncompressed configuration, each among those passing the parity gate;
    ``auto`` rows (each one of the runtimes) count only when no runtime was benchmarked by name."""
    named = [r for r in configs if r["backend"] != AUTO] or configs

    def best(compressed: bool) -> dict[str, Any] | None:
        passing = [r for r in named if r["compressed"] == compressed and r["passes_gate"] and "timing" in r]
        return min(passing, key=lambda r: r["timing"]["median"], default=None)

    def brief(row: dict[str, Any] | None) -> dict[str, Any] | None:
        keys = ("variant", "backend", "precision", "requested_precision", "agreement", "dice", "worst_class_dice")
        return None if row is None else {k: row[k] for k in keys} | {
            "median_s": row["timing"]["median"], "peak_rss_mb": row["peak_rss_mb"]}

    u, c = best(False), best(True)
    ratio = round(u["timing"]["median"] / c["timing"]["median"], 3) if u and c else None
    return {"best_uncompressed": brief(u), "best_compressed": brief(c), "speedup": ratio}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
