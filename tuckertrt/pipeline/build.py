"""``tuckertrt build``: decompose → (distil) → export + simplify (+FP16) → engines → backend → validate → report.

Everything is written into a temporary folder beside the output and renamed into place at the end, so an
interrupted or failed build leaves nothing behind; a build whose parity gates fail still writes its report (and
the CLI exits 1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tuckertrt.backends.registry import AUTO, ONNX_BACKENDS, open_backend
from tuckertrt.inference.timing import interleaved
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.accounting import totals
from tuckertrt.decomposition.serialize import save_decomposed
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import atomic_dir, check_replaceable, write_json_atomic
from tuckertrt.graph.manifest import model_provenance, tool_versions
from tuckertrt.inference.defaults import DEFAULT_TILE_STEP
from tuckertrt.inference.segment import Runner
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.inference.patches import default_patch
from tuckertrt.inference.backend_choice import choose_backend
from tuckertrt.data import example_ct, example_dicom, example_reference
from tuckertrt.parity.export import export_model
from tuckertrt.parity.gate import ParityGate
from tuckertrt.pipeline.report import write_report
from tuckertrt.pipeline.validation import validate_case

BACKENDS = (AUTO, *ONNX_BACKENDS, "torch")  # what validates a build


INITS = ("data", "hosvd")


@dataclass
class BuildOptions:
    df: float | None = 0.3
    min_rank: int = 8
    policy: str = "default"
    ranks: dict[str, Any] | None = None
    auto_macs: float | None = None  # --ranks auto under a MAC fraction...
    auto_speedup: float | None = None  # ...or a measured speedup (OpenVINO bf16, deployed form)
    init: str = "data"  # factors fitted on calibration CTs ("data") or from the weights alone ("hosvd")
    calibrate: list[Path] = field(default_factory=list)  # default: the --distill CTs, else the bundled example CT
    device: str = "cpu"  # for the data-aware fit and distillation
    fp16: bool = False
    backend: str = "auto"
    precision: str | None = None  # default: fp32, or what "auto" picks
    validate: list[Path] = field(default_factory=list)  # default: the bundled example CT (with its reference)
    # and the bundled DICOM series of another patient (held out)
    references: list[Path | None] = field(default_factory=list)
    gate: ParityGate = field(default_factory=ParityGate)
    tile_step: float = DEFAULT_TILE_STEP
    distill: list[Path] = field(default_factory=list)
    distill_iterations: int = 200
    engines: bool = True
    rtx: bool = False
    progress: bool = False

    @property
    def auto(self) -> bool:
        return self.auto_macs is not None or self.auto_speedup is not None

    def check(self) -> None:
        if self.df is not None and not 0 < self.df <= 1:
            raise UsageError(f"--df must be in (0, 1], got {self.df}")
        if self.df is None and not self.ranks and not self.auto:
            raise UsageError("give --df or --ranks")
        if self.init not in INITS:
            raise UsageError(f"--init must be one of {', '.join(INITS)}")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
        if self.references and len(self.references) != len(self.validate):
            raise UsageError("give one --reference per --validate CT")
        if self.distill_iterations < 1:
            raise UsageError(f"distillation iterations must be positive, got {self.distill_iterations}")


@dataclass
class BuildOutcome:
    out_dir: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report["gates"]["passed"])


def _check_out_dir(out_dir: Path, inputs: list[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise TuckerTRTError(f"output path {out_dir} exists and is not a directory")
    for p in inputs:
        p = p.resolve()
        if p == out_dir.resolve() or out_dir.resolve() in p.parents:
            raise TuckerTRTError(f"output directory {out_dir} contains the input {p}; choose another")
    check_replaceable(out_dir)  # absent, empty, or an earlier build holding only tuckertrt's files


def run_build(model: LoadedModel, out_dir: str | Path, options: BuildOptions,
              log: Callable[[str], None] = print) -> BuildOutcome:
    options.check()
    out_dir = Path(out_dir)
    cases = options.validate or [example_ct(), example_dicom()]
    references = options.references or ([example_reference(), None] if not options.validate else [None] * len(cases))
    calibrate = options.calibrate or options.distill or [example_ct()]
    _check_out_dir(out_dir, [*cases, *options.distill, *calibrate, *(r for r in references if r)])
    timings: dict[str, float] = {}
    with atomic_dir(out_dir) as tmp:
        start = time.perf_counter()
        compressed, auto = _decompose(model, options, calibrate, log)
        timings["decompose"] = time.perf_counter() - start
        log(f"decomposed {len(compressed.decomposition['ranks'])} layers "
            f"({compressed.decomposition['init']} factors) in {timings['decompose']:.1f} s")
        variants = {"original": model, "compressed": compressed}
        distillation = None
        if options.distill:
            start = time.perf_counter()
            variants["zero-shot"] = compressed
            compressed, distillation = _distill(model, compressed, options, tmp / "distill", log)
            variants["compressed"] = compressed
            timings["distill"] = time.perf_counter() - start
        save_decomposed(compressed, tmp / "model.pt")

        patch, patch_label = default_patch(model.spec)
        exports = {}
        for name, m in variants.items():
            start = time.perf_counter()
            exports[name] = export_model(m, tmp / "onnx" / name, fp16=options.fp16, verify_input=patch,
                                         input_label=patch_label)
            timings[f"export_{name}"] = time.perf_counter() - start
            log(f"exported the {name} model in {timings[f'export_{name}']:.1f} s")

        engines = _engines(exports, options, tmp / "engines", log)
        backend, precision, choice = _backend(options, exports["compressed"].artifacts["fp32"], compressed, patch,
                                              log)
        runners = {name: _runner(backend, precision, exports[name].artifacts, m) for name, m in variants.items()}
        patch_latency = interleaved({n: (lambda r=r: r.predict(patch)) for n, r in runners.items()
                                     if n != "zero-shot"}, rounds=3)
        log("per-patch latency on " + f"{backend} {precision}: " + ", ".join(
            f"{n} {t.median:.3f} s" for n, t in patch_latency.items()))

        case_results = []
        for ct, ref in zip(cases, references):
            log(f"validating on {ct.name}")
            case_results.append(validate_case(ct, runners, ref, tmp / "segmentations", options.tile_step,
                                              options.progress))
        report = _report(model, compressed, options, exports, engines, choice, backend, precision, patch_latency,
                         case_results, distillation, timings, auto, calibrate)
        if auto:
            write_json_atomic(tmp / "ranks.json", {"ranks": auto.allocation.rank_spec(), "auto": auto.to_json()})
        write_report(tmp, report)
        write_json_atomic(tmp / "manifest.json", _manifest(model, compressed, exports, engines, choice, backend,
                                                           precision, tmp))
    return BuildOutcome(out_dir, report)


def _decompose(model: LoadedModel, options: BuildOptions, calibrate: list[Path], log):
    """The compressed model (ranks from --df/--ranks or chosen by --ranks auto; data-aware or HOSVD factors)."""
    from tuckertrt.pipeline.auto_ranks import auto_ranks
    from tuckertrt.training.calibration import calibration_images

    images = None
    if options.init == "data" or options.auto:
        images = calibration_images(calibrate, model.spec).to(options.device)
        log(f"calibration: {len(images)} crops of {', '.join(p.name for p in calibrate)}")
    ranks, auto = options.ranks, None
    if options.auto:
        auto = auto_ranks(model, images, macs=options.auto_macs, speedup=options.auto_speedup,
                          min_rank=options.min_rank)
        ranks = auto.allocation.rank_spec()
        log(f"auto ranks: {auto.mac_fraction:.2f} of the MACs, predicted layer error "
            f"{auto.allocation.predicted_error:.3f}" + "".join(
                f"; measured {r['speedup']:.2f}× at {r['mac_fraction']:.2f}" for r in auto.rounds))
    compressed = decompose(model, df=None if options.auto else options.df, min_rank=options.min_rank,
                           policy=options.policy, ranks=ranks,
                           calibration=images if options.init == "data" else None)
    return compressed, auto


def _distill(model: LoadedModel, compressed: LoadedModel, options: BuildOptions, out: Path, log):
    from tuckertrt.training.loop import TrainConfig
    from tuckertrt.training.recovery import RecoveryOptions, distill, recipe

    log(f"distilling from the uncompressed model on {len(options.distill)} CT(s), "
        f"{options.distill_iterations} iterations")
    settings = recipe(distill=True)  # the factors are already fitted to the data: no second initialisation
    recovery = RecoveryOptions(config=TrainConfig(iterations=options.distill_iterations, lr=settings["lr"],
                                                  batch_size=1, weight_decay=settings["weight_decay"],
                                                  schedule=settings["schedule"], device=options.device,
                                                  checkpoint_every=max(1, options.distill_iterations // 4)),
                               pseudo_label_weight=settings["pseudo_labels"], init="none",
                               progress=options.progress)
    student, report = distill(model, compressed, options.distill, out, options=recovery)
    return student, report


def _engines(exports, options: BuildOptions, out: Path, log) -> dict[str, Any]:
    """TensorRT engines where a GPU and TensorRT are present (else skipped with a warning); TensorRT-RTX
    ahead-of-time engines when asked for (no GPU needed)."""
    from tuckertrt.engines.builder import BuildOptions as EngineOptions
    from tuckertrt.engines.builder import build_engine
    from tuckertrt.parity.engines import compare_engine
    from tuckertrt.engines.runtime import engine_support

    targets = (["trt"] if options.engines else []) + (["rtx"] if options.rtx else [])
    built: dict[str, Any] = {"skipped": {}}
    for target in targets:
        ok, reason = engine_support(target)
        if not ok:
            log(f"warning: skipping {target} engines: {reason}")
            built["skipped"][target] = reason
            continue
        for name, result in exports.items():
            if name == "zero-shot":  # exported only to show what distillation changed; nothing to ship
                continue
            for fp16 in ([False, True] if options.fp16 else [False]):
                engine = build_engine(result.out_dir, out, EngineOptions(target=target, fp16=fp16))
                entry = {"engine": str(engine.engine.relative_to(out.parent)), "sidecar": engine.sidecar}
                if target == "trt":  # built on this GPU, so it runs here: prove it against ONNX Runtime
                    entry["comparison"] = compare_engine(engine.engine, result.out_dir)
                built[f"{target}/{name}/{'fp16' if fp16 else 'fp32'}"] = entry
                log(f"built {engine.engine.name}")
    return built


def _backend(options: BuildOptions, onnx: Path, compressed: LoadedModel, patch: np.ndarray, log):
    if options.backend != "auto":
        return options.backend, options.precision or "fp32", None
    reference = open_backend("torch", compressed, input_shape=patch.shape, device="cpu").run(patch)
    choice = choose_backend(onnx, patch, reference)
    log(f"backend: {choice.backend} {choice.precision} ({choice.reason})")
    return choice.backend, choice.precision, choice


def _runner(backend: str, precision: str, artifacts: dict[str, Path], model: LoadedModel) -> Runner:
    if backend == "torch":
        return Runner(model.spec, open_backend("torch", model, precision, device="cpu"))
    onnx = artifacts["fp16" if precision == "fp16" and "fp16" in artifacts else "fp32"]
    return Runner(model.spec, open_backend(backend, onnx, precision=precision, head="auto"))


def _gates(cases, options: BuildOptions) -> dict[str, Any]:
    dice = [c.parity["compressed"]["mean_dice"] for c in cases]
    worst = min(((cls["dice"], cls["name"], c.case) for c in cases for cls in c.parity["compressed"]["classes"]),
                default=(1.0, None, None))
    mean = float(np.mean(dice)) if dice else 1.0
    return {**options.gate.to_json(), "mean_dice": mean,
            "worst_class": {"dice": worst[0], "name": worst[1], "case": worst[2]},
            "passed": options.gate.passes(mean, worst[0])}


def _report(model, compressed, options, exports, engines, choice, backend, precision, patch_latency, cases,
            distillation, timings, auto, calibrate) -> dict[str, Any]:
    spec = model.spec
    params0, macs0 = totals(model.network, spec.patch_size, spec.input_channels)
    params, macs = totals(compressed.network, spec.patch_size, spec.input_channels)
    latency = {n: t.to_json() for n, t in patch_latency.items()}
    gates = _gates(cases, options)
    return {
        "schema": "tuckertrt-build/1",
        "model": spec.name, "df": None if options.auto else options.df, "min_rank": options.min_rank,
        "policy": options.policy, "init": compressed.decomposition["init"],
        "ranks": "auto" if auto else ("file" if options.ranks else "df"),
        "auto_ranks": auto.to_json() if auto else None,
        "calibrated_on": [str(p) for p in calibrate] if compressed.decomposition["init"] == "data" or auto else [],
        "compression": {"params_original": params0, "params": params, "compression_ratio": params0 / params,
                        "gmacs_original": macs0 / 1e9, "gmacs": macs / 1e9, "mac_ratio": macs0 / macs},
        "backend": {"name": backend, "precision": precision, "choice": choice.to_json() if choice else None},
        "patch_latency": latency,
        "patch_speedup": latency["original"]["median"] / latency["compressed"]["median"],
        "volume_speedup": float(np.median([c.seconds["original"] / c.seconds["compressed"] for c in cases])),
        "export_comparisons": {n: e.manifest["comparisons"] for n, e in exports.items()},
        "engines": engines,
        "distillation": distillation,
        "distilled_on": [str(p) for p in options.distill],
        "cases": [{**c.to_json(), "held_out": _held_out(c.source, [*calibrate, *options.distill])} for c in cases],
        "gates": gates,
        "levers": [] if gates["passed"] else _levers(compressed, options, gates, cases, distillation),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
    }


def _levers(compressed: LoadedModel, options: BuildOptions, gates: dict[str, Any], cases,
            distillation: dict[str, Any] | None) -> list[str]:
    """What would move a failed build towards its gate, each with the figures this build measured."""
    levers = []
    per_case = ", ".join(f"{c.case} {c.parity['compressed']['mean_dice']:.3f}" for c in cases)
    if distillation is None:
        levers.append(f"recovery: --distill CT... (a clinic's unlabelled CTs; add --device cuda on a GPU): the "
                      f"compressed model's mean Dice is {per_case} without it")
    else:
        recovered = distillation["recovered"]
        levers.append(f"more recovery: --distill-iterations above {distillation['iterations']} or more CTs; "
                      f"held-out mean Dice {distillation['zero_shot']['mean_dice']:.3f} before, "
                      f"{recovered['mean_dice']:.3f} after (best at iteration {distillation['best_iteration']})")
    fits = compressed.decomposition.get("layer_fits") or []
    if fits:
        worst = sorted(fits, key=lambda f: -f["error_data"])[:3]
        levers.append("less compression where it hurts: --ranks auto --macs F (or --speedup S) keeps the sensitive "
                      "layers; largest output errors here: " + ", ".join(
                          f"{f['name']} {f['error_data']:.2f}" for f in worst))
    elif compressed.decomposition.get("init") == "hosvd":
        levers.append("data-aware factors: --init data (fitted on calibration CTs) instead of --init hosvd")
    if options.df is not None and not options.auto:
        levers.append(f"a lower speed target: a DF above {options.df:g}")
    worst = gates["worst_class"]
    levers.append(f"the gate failed on mean Dice {gates['mean_dice']:.3f} (≥ {options.gate.min_dice:g}) and worst "
                  f"class {worst['name']} {worst['dice']:.3f} in {worst['case']} (≥ {options.gate.min_class_dice:g})")
    return levers


def _held_out(case: str, inputs: list[Path]) -> bool:
    """Whether a validation CT was never seen by calibration or distillation."""
    return Path(case).resolve() not in {Path(p).resolve() for p in inputs}


def _manifest(model, compressed, exports, engines, choice, backend, precision, root: Path) -> dict[str, Any]:
    artifacts = {}
    for name, result in exports.items():
        for entry_name, entry in result.manifest["artifacts"].items():
            artifacts[f"onnx/{name}/{entry_name}"] = entry
    return {
        "format": "tuckertrt-build-manifest/1",
        "model": model_provenance(model),
        "decomposition": compressed.decomposition,
        "artifacts": artifacts,
        "engines": {k: v for k, v in engines.items() if k != "skipped"},
        "engines_skipped": engines.get("skipped", {}),
        "default_backend": {"backend": backend, "precision": precision,
                            "reason": choice.reason if choice else "chosen by --backend"},
        "tools": tool_versions(),
    }
