"""Build a TensorRT or TensorRT-RTX engine from ONNX: strongly typed, static profile at the model's patch.

Precision comes from the ONNX types (TensorRT 11 removed the FP16 builder flag): an FP16 engine is built from the
FP16 export, whose InstanceNormalization stays FP32. Full TensorRT builds for the GPU it runs on (optionally
hardware-compatible "ampere+"); TensorRT-RTX builds ahead of time, without a GPU, for a list of compute
capabilities. The engine and its sidecar are written atomically; a failed build leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from tuckertrt.version import __version__
from tuckertrt.engines.gpu import GpuInfo
from tuckertrt.engines.naming import engine_filename
from tuckertrt.engines.runtime import (ENGINE_TAGS, collecting_logger, import_tensorrt, network_flags,
                                       require_gpu, rtx_compute_capabilities, version_of)
from tuckertrt.engines.sidecar import AHEAD_OF_TIME, SIDECAR_FORMAT, sidecar_path
from tuckertrt.engines.source import OnnxSource, resolve_source
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import atomic_path, ensure_output_dir, sha256_file, write_bytes_atomic, write_json_atomic

HARDWARE_COMPAT = ("ampere+",)
FP32_3D_CONV_MIN_SM = 80  # TensorRT-RTX cannot compile FP32 3D convolutions for Turing (SM75)


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings; ``sms`` only for TensorRT-RTX (empty: every compute capability it supports)."""

    target: str = "trt"
    fp16: bool = False
    workspace_mb: int | None = None
    opt_level: int | None = None
    timing_cache: Path | None = None
    hardware_compat: str | None = None
    version_compatible: bool = False
    sms: tuple[int, ...] = ()
    max_batch: int = 1
    patch: tuple[int, ...] | None = None

    def validate(self) -> None:
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise UsageError(f"--opt-level must be 0-5, got {self.opt_level}")
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise UsageError(f"--workspace must be a positive number of MB, got {self.workspace_mb}")
        if self.hardware_compat is not None and self.hardware_compat not in HARDWARE_COMPAT:
            raise UsageError(f"--hardware-compat must be one of {', '.join(HARDWARE_COMPAT)}")
        if self.max_batch < 1:
            raise UsageError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.target == "rtx" and self.hardware_compat:
            raise UsageError("TensorRT-RTX has no hardware-compatibility levels: list the GPUs with --sm instead")
        if self.target == "rtx" and self.timing_cache:
            raise UsageError("TensorRT-RTX has no timing cache (its timing-cache calls are no-ops); drop --timing-cache")
        if self.target == "trt" and self.sms and self.hardware_compat:
            raise UsageError("--sm and --hardware-compat exclude each other")


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    sidecar: dict[str, Any]

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.engine)


def _rtx_targets(trt: ModuleType, options: BuildOptions, precision: str) -> list[int]:
    supported = rtx_compute_capabilities(trt)
    if not options.sms:
        return [sm for sm in supported if precision == "fp16" or sm >= FP32_3D_CONV_MIN_SM]
    label = f"TensorRT-RTX {trt.__version__}"
    for sm in options.sms:
        if sm not in supported:
            hopper = (" (Hopper, e.g. H100/H200: TensorRT-RTX does not support it; build on that GPU with "
                      "--target trt)") if sm // 10 == 9 else ""
            raise UsageError(f"{label} cannot build for SM{sm}{hopper}; it builds for "
                             + ", ".join(f"SM{s}" for s in supported))
        if sm < FP32_3D_CONV_MIN_SM and precision == "fp32":
            raise UsageError(f"{label} cannot build FP32 3D convolutions for SM{sm} (Turing): use --fp16 or "
                             "drop that compute capability")
    return sorted(set(options.sms))


def _trt_gpu(trt: ModuleType, options: BuildOptions) -> GpuInfo:
    gpu = require_gpu(trt)
    if options.sms and list(options.sms) != [gpu.sm]:
        raise UsageError(f"full TensorRT builds for the GPU it runs on (SM{gpu.sm}, {gpu.name}); for other GPUs "
                         "use --hardware-compat ampere+ or --target rtx --sm ...")
    if options.hardware_compat and gpu.sm < FP32_3D_CONV_MIN_SM:
        raise UsageError(f"--hardware-compat ampere+ needs an Ampere or newer GPU to build on, found SM{gpu.sm}")
    return gpu


def _parser_error(error: Any) -> str:
    where = ""
    node = getattr(error, "node_name", lambda: "")()
    op = getattr(error, "node_operator", lambda: "")()
    if node or op:
        where = f"node {node or error.node()} ({op}): " if op else f"node {node}: "
    return where + " ".join(str(error.desc()).split())


def _parse(trt: ModuleType, builder: Any, logger: Any, source: OnnxSource) -> Any:
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source.path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise TuckerTRTError(f"TensorRT's ONNX parser rejected {source.path.name}: " + " | ".join(errors))
    return network, parser


def _shapes(network: Any, options: BuildOptions, source: OnnxSource) -> dict[str, dict[str, list[int]]] | None:
    """min/opt/max per dynamic input: batch 1..max_batch, spatial dims from --patch or the manifest's patch."""
    patch = options.patch or tuple(((source.manifest or {}).get("model") or {}).get("spec", {}).get("patch_size", ()))
    profile: dict[str, dict[str, list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if -1 not in shape:
            if options.patch and tuple(shape[2:]) != tuple(options.patch):
                raise UsageError(f"{source.path.name} has the static input shape {shape}; --patch does not apply")
            continue
        if -1 in shape[2:] and len(patch) != len(shape) - 2:
            raise UsageError(f"{source.path.name} has a dynamic spatial shape {shape}: give --patch")
        fixed = [d if d != -1 else patch[k - 2] for k, d in enumerate(shape) if k > 0]
        batch = [shape[0]] * 3 if shape[0] != -1 else [1, 1, options.max_batch]
        profile[tensor.name] = {key: [b, *fixed] for key, b in zip(("min", "opt", "max"), batch)}
    return profile or None


def _configure(trt: ModuleType, builder: Any, options: BuildOptions, sms: list[int],
               profile: dict[str, dict[str, list[int]]] | None) -> Any:
    config = builder.create_builder_config()
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if options.version_compatible:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise UsageError(f"TensorRT {trt.__version__} cannot build version-compatible engines")
        config.set_flag(flag)
    if options.hardware_compat:
        level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), "AMPERE_PLUS", None)
        if level is None:
            raise UsageError(f"TensorRT {trt.__version__} has no hardware-compatibility levels")
        config.hardware_compatibility_level = level
    if options.target == "rtx":
        config.num_compute_capabilities = len(sms)
        for index, sm in enumerate(sms):
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), index)
    if profile:
        optimization_profile = builder.create_optimization_profile()
        for name, shapes in profile.items():
            optimization_profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(optimization_profile)
    return config


def _attach_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(data), False):
        raise TuckerTRTError(f"timing cache {path} does not match this GPU/TensorRT; delete it to start afresh")


def _cuda_flavour(module: str) -> str | None:
    """"cu12"/"cu13" from the installed wheel name (tensorrt-cu12, tensorrt_rtx_cu13), when there is one."""
    for dist in importlib.metadata.distributions():
        match = re.fullmatch(rf"{module}[-_](cu\d+)", (dist.metadata["Name"] or "").replace("-", "_"))
        if match:
            return match.group(1)
    return None


def _tensors(network: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    describe = [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype).rpartition(".")[2].lower()}
                for t in inputs + outputs]
    return describe[0], describe[len(inputs):]


def _sidecar(trt: ModuleType, engine: Path, data: bytes, source: OnnxSource, options: BuildOptions,
             sms: list[int], gpu: GpuInfo | None, network: Any, config: Any, profile: Any,
             seconds: float) -> dict[str, Any]:
    input_, outputs = _tensors(network)
    return {
        "format": SIDECAR_FORMAT,
        "engine": engine.name,
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "engine_bytes": len(data),
        "model": source.model,
        "df": source.df,
        "precision": source.precision,
        "target": options.target,
        "tensorrt": {"package": trt.__name__, "version": trt.__version__, "major_minor": list(version_of(trt)),
                     "onnx_parser": getattr(trt, "get_nv_onnx_parser_version", lambda: None)(),
                     "cuda": _cuda_flavour(trt.__name__)},
        "compute_capabilities": sms,
        "gpu": gpu.to_json() if gpu else AHEAD_OF_TIME,
        "flags": {"strongly_typed": True, "opt_level": config.builder_optimization_level,
                  "workspace_mb": options.workspace_mb,
                  "hardware_compat": options.hardware_compat, "version_compatible": options.version_compatible,
                  "timing_cache": str(options.timing_cache) if options.timing_cache else None},
        "input": input_,
        "outputs": outputs,
        "profile": profile,
        "spec": ((source.manifest or {}).get("model") or {}).get("spec"),  # normalisation, labels: for inference
        "source_onnx": str(source.converted_from or source.path),
        "source_onnx_sha256": sha256_file(source.converted_from or source.path),
        "converted_to_fp16": source.converted_from is not None,
        "build_seconds": round(seconds, 2),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tuckertrt": __version__,
    }


def build_engine(onnx_or_dir: str | Path, out_dir: str | Path = "engines",
                 options: BuildOptions = BuildOptions()) -> BuildResult:
    """Build one engine from an ONNX file or export directory into ``out_dir``; return its path and sidecar."""
    options.validate()
    trt = import_tensorrt(options.target)
    gpu = _trt_gpu(trt, options) if options.target == "trt" else None
    with tempfile.TemporaryDirectory(prefix="tuckertrt-engine-") as scratch:
        source = resolve_source(onnx_or_dir, options.fp16, Path(scratch))
        sms = [gpu.sm] if gpu else _rtx_targets(trt, options, source.precision)
        logger = collecting_logger(trt)
        builder = trt.Builder(logger)
        network, _parser = _parse(trt, builder, logger, source)  # the parser must outlive the build
        profile = _shapes(network, options, source)
        config = _configure(trt, builder, options, sms, profile)
        _attach_timing_cache(config, options.timing_cache)
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            label = f"{'TensorRT-RTX' if options.target == 'rtx' else 'TensorRT'} {trt.__version__}"
            errors = list(dict.fromkeys(logger.errors))[:2] or ["no error message"]
            raise TuckerTRTError(f"{label} could not build {source.path.name}: " + " | ".join(errors))
        data = bytes(serialized)
        name = engine_filename(source.model, source.df, source.precision, sms, ENGINE_TAGS[options.target],
                               version_of(trt), options.hardware_compat, options.version_compatible)
        engine = Path(out_dir) / name
        sidecar = _sidecar(trt, engine, data, source, options, sms, gpu, network, config, profile, seconds)
    ensure_output_dir(out_dir)  # created only once there is an engine to put in it
    with atomic_path(engine) as tmp:
        tmp.write_bytes(data)
        write_json_atomic(sidecar_path(engine), sidecar)
    if options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    return BuildResult(engine, sidecar)

