"""OpenVINO backend (CPU): the same ONNX as every other runtime, compiled with a precision hint and a cache.

``precision`` is the CPU plugin's ``INFERENCE_PRECISION_HINT``: ``bf16`` (AMX/AVX512-BF16; falls back to f32,
with a note, on CPUs without it), ``f32``/``fp32``, ``f16``/``fp16`` (where the CPU has it), or ``int8`` for an
artifact that already carries quantisation (Q/DQ ONNX or an NNCF-quantised IR; its non-quantised ops run in bf16
where available). ``PERFORMANCE_HINT=LATENCY`` and ``INFERENCE_NUM_THREADS`` are set; with ``cache_dir`` the
compiled model is cached so a second load skips compilation.

``run`` returns a copy of the float32 logits (writing them straight into a fresh caller array measured no
faster: the fresh pages' faults dominate either way). With ``logits="f16"`` the logits leave the graph as float16 (half the bytes of the largest tensor of a
118-class patch); ``run`` then returns float16 — fine for argmax and for a float32 Gaussian accumulator
(``acc += logits * gaussian`` upcasts), opt-in because the Backend protocol promises float32.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.backends.ort_runner import resolve_onnx
from tuckertrt.errors import MissingDependencyError, TuckerTRTError
from tuckertrt.fileio import ensure_output_dir

PRECISION_ALIASES = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16", "int8": "int8"}
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
LOGITS_TYPES = {"f32": np.float32, "f16": np.float16}
_QUANT_OPS = {"FakeQuantize", "QuantizeLinear", "DequantizeLinear", "FakeConvert"}


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", extra="openvino", purpose="the OpenVINO backend") from None
    return openvino


def cpu_capabilities(core: Any | None = None) -> list[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. BF16, FP16, INT8)."""
    core = core or _openvino().Core()
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, compiled: Any, precision: str, requested: str, source: Path, threads: int | None,
                 cache_dir: Path | None, notes: list[str], profile: bool):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision
        self.requested = requested
        self.source = source
        self.threads = threads
        self.cache_dir = cache_dir
        self.notes = notes
        self.profiling = profile
        self.input_shape = tuple(int(d) for d in compiled.input(0).get_partial_shape().get_min_shape())
        self.output_dtype = LOGITS_TYPES.get(compiled.output(0).get_element_type().get_type_name(), np.float32)

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def load(cls, artifact: Path, precision: str = "bf16", threads: int | None = None,
             cache_dir: str | Path | None = None, profile: bool = False, device: str = "CPU",
             logits: str = "f32", **opts: Any) -> "OpenVinoBackend":
        ov = _openvino()
        if opts:
            raise TuckerTRTError(f"unknown OpenVINO option(s): {', '.join(sorted(opts))}")
        if precision not in PRECISION_ALIASES:
            raise TuckerTRTError(f"OpenVINO precision must be one of {', '.join(PRECISION_ALIASES)}, not {precision}")
        if threads is not None and threads < 1:
            raise TuckerTRTError(f"threads must be a positive integer, got {threads}")
        if logits not in LOGITS_TYPES:
            raise TuckerTRTError(f"logits must be one of {', '.join(LOGITS_TYPES)}, not {logits}")
        source = resolve_onnx(Path(artifact), "fp32")  # OpenVINO lowers precision itself
        core = ov.Core()
        hint, notes = _inference_precision(PRECISION_ALIASES[precision], cpu_capabilities(core), device)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                  "PERF_COUNT": bool(profile)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        cache = _cache_dir(cache_dir)
        if precision == "int8" and not _is_quantized(_read_model(core, source)):
            raise TuckerTRTError(f"{source} carries no quantisation (no Q/DQ or FakeQuantize nodes); "
                                 "quantise it first (tuckertrt.quantization)")
        model: Any = str(source)
        if logits != "f32":  # the graph's last reorder converts to f16 itself: half the bytes leave the graph
            ppp = ov.preprocess.PrePostProcessor(_read_model(core, source))
            ppp.output(0).tensor().set_element_type(ov.Type.f16)
            model = ppp.build()
        compiled = _compile(core, model, device, config, cache, notes)
        actual = "int8" if precision == "int8" else {"f32": "fp32", "f16": "fp16"}.get(hint, hint)
        return cls(compiled, actual, precision, source, threads, cache, notes, profile)

    def run(self, patch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(patch, dtype=np.float32)
        if x.ndim != len(self.input_shape) or x.shape[1:] != self.input_shape[1:]:
            raise TuckerTRTError(f"input shape {x.shape} does not match the model's {self.input_shape}")
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.astype(self.output_dtype, copy=True)

    def profile(self) -> list[dict[str, Any]]:
        """Per-node timings of the last ``run`` (needs ``profile=True`` at load): name, type, kernel, seconds."""
        if not self.profiling:
            raise TuckerTRTError("load the OpenVINO backend with profile=True to get per-node timings")
        return [{"name": p.node_name, "type": p.node_type, "kernel": p.exec_type,
                 "seconds": p.real_time.total_seconds()}
                for p in self.request.get_profiling_info() if p.status.name == "EXECUTED"]

    def describe(self) -> dict[str, Any]:
        ov = _openvino()
        facts: dict[str, Any] = {
            "backend": self.name, "precision": self.precision, "requested_precision": self.requested,
            "device": "CPU", "openvino": ov.__version__, "source": str(self.source),
            "threads": self.compiled.get_property("INFERENCE_NUM_THREADS"),
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
        }
        if self.notes:
            facts["notes"] = list(self.notes)
        return facts

    def close(self) -> None:
        self.request = None
        self.compiled = None


def _inference_precision(wanted: str, capabilities: list[str], device: str) -> tuple[str, list[str]]:
    """The precision hint to compile with, and a note when the CPU cannot do the requested one."""
    if device != "CPU":
        raise TuckerTRTError(f"the OpenVINO backend runs on the CPU only, not {device}")
    target = "bf16" if wanted == "int8" else wanted
    needed = _CAPABILITY.get(target)
    if needed and needed not in capabilities:
        note = f"this CPU has no {needed} support ({', '.join(capabilities)}); running in f32 instead of {target}"
        warnings.warn(note, stacklevel=3)
        return "f32", [note]
    return target, []


def _cache_dir(cache_dir: str | Path | None) -> Path | None:
    return None if cache_dir is None else ensure_output_dir(cache_dir)


def _read_model(core: Any, source: Path) -> Any:
    try:
        return core.read_model(str(source))
    except RuntimeError as e:
        raise TuckerTRTError(f"OpenVINO cannot read {source}: {_first_line(e)}") from None


def _is_quantized(model: Any) -> bool:
    return any(op.get_type_name() in _QUANT_OPS for op in model.get_ops())


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _compile(core: Any, model: Any, device: str, config: dict[str, Any], cache: Path | None,
             notes: list[str]) -> Any:
    """Compile ``model`` (preferably a file path: a cache hit then skips reading the model too); an unusable
    cache is bypassed with a note, an unreadable model is a one-line error."""
    if cache is not None:
        try:
            return core.compile_model(model, device, {**config, "CACHE_DIR": str(cache)})
        except RuntimeError as e:
            cache_error = _first_line(e)
    try:
        compiled = core.compile_model(model, device, config)
    except RuntimeError as e:
        raise TuckerTRTError(f"OpenVINO cannot compile {model if isinstance(model, str) else 'the model'}: "
                             f"{_first_line(e)}") from None
    if cache is not None:
        note = f"compiled-model cache {cache} is unusable ({cache_error}); compiled without it"
        warnings.warn(note, stacklevel=3)
        notes.append(note)
    return compiled
