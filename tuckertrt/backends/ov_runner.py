"""OpenVINO backend (CPU): the same ONNX as every other runtime, compiled with a precision hint and a cache.

``precision`` is the CPU plugin's ``INFERENCE_PRECISION_HINT``: ``bf16`` (AMX/AVX512-BF16; falls back to f32,
with a note, on CPUs without it), ``f32``/``fp32``, ``f16``/``fp16`` (where the CPU has it), or ``int8`` for an
artifact that already carries quantisation (Q/DQ ONNX or an NNCF-quantised IR; its non-quantised ops run in bf16
where available). ``PERFORMANCE_HINT=LATENCY`` and ``INFERENCE_NUM_THREADS`` are set; with ``cache_dir`` the
compiled model is cached so a second load skips compilation.

The ONNX is rewritten exactly before compilation (``rewrite``, :mod:`tuckertrt.graph.rewrite`); with
``head="host"``/``"auto"`` the segmentation head is split off (:mod:`tuckertrt.graph.head`) and ``run`` returns
channels-last features, in bfloat16 (``ml_dtypes``) when the network runs in bf16, so that nothing is converted
or reordered on the way out. ``run`` returns a new array each call: a static-shape model writes straight into it.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from tuckertrt.backends.ort_runner import resolve_onnx
from tuckertrt.errors import MissingDependencyError, TuckerTRTError
from tuckertrt.fileio import ensure_output_dir
from tuckertrt.graph.deploy import InferenceGraph, inference_graph

PRECISION_ALIASES = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16", "int8": "int8"}
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
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

    def __init__(self, compiled: Any, precision: str, requested: str, graph: InferenceGraph, threads: int | None,
                 cache_dir: Path | None, notes: list[str], profile: bool):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision
        self.requested = requested
        self.source = graph.path
        self.graph = replace(graph, model=None)  # the compiled model holds the weights: the ONNX graph goes
        self.head = graph.head
        self.bf16_output = compiled.output(0).get_element_type().get_type_name() == "bf16"
        self.threads = threads
        self.cache_dir = cache_dir
        self.notes = notes
        self.profiling = profile
        self.input_shape = tuple(int(d) for d in compiled.input(0).get_partial_shape().get_min_shape())

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def load(cls, artifact: Path, precision: str = "bf16", threads: int | None = None,
             cache_dir: str | Path | None = None, profile: bool = False, device: str = "CPU",
             rewrite: bool = True, head: str = "graph", **opts: Any) -> "OpenVinoBackend":
        ov = _openvino()
        if opts:
            raise TuckerTRTError(f"unknown OpenVINO option(s): {', '.join(sorted(opts))}")
        if precision not in PRECISION_ALIASES:
            raise TuckerTRTError(f"OpenVINO precision must be one of {', '.join(PRECISION_ALIASES)}, not {precision}")
        if threads is not None and threads < 1:
            raise TuckerTRTError(f"threads must be a positive integer, got {threads}")
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
        graph = inference_graph(source, rewrite, head) if source.suffix == ".onnx" else InferenceGraph(source)
        model: Any = str(source)
        if graph.model is not None:
            model = _read_model(core, graph.source, source)
            if graph.head is not None and hint == "bf16":  # the features leave the graph as computed
                ppp = ov.preprocess.PrePostProcessor(model)
                ppp.output(0).tensor().set_element_type(ov.Type.bf16)
                model = ppp.build()
        compiled = _compile(core, model, device, config, cache, notes)
        actual = "int8" if precision == "int8" else {"f32": "fp32", "f16": "fp16"}.get(hint, hint)
        return cls(compiled, actual, precision, graph, threads, cache, notes, profile)

    def run(self, patch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(patch, dtype=np.float32)
        if x.ndim != len(self.input_shape) or x.shape[1:] != self.input_shape[1:]:
            raise TuckerTRTError(f"input shape {x.shape} does not match the model's {self.input_shape}")
        ov, port = _openvino(), self.compiled.output(0)
        if port.get_partial_shape().is_static and (self.bf16_output or port.get_element_type() == ov.Type.f32):
            # the runtime writes into a new array of the caller's: no internal output buffer, no copy
            shape = tuple(port.get_shape())
            out = np.empty(shape, ml_dtypes.bfloat16 if self.bf16_output else np.float32)
            self.request.set_output_tensor(0, ov.Tensor(out.view(np.uint16) if self.bf16_output else out, shape,
                                                        port.get_element_type()))
            self.request.infer({0: x}, share_inputs=True, share_outputs=True)
            return out
        self.request.infer({0: x}, share_inputs=True, share_outputs=True)
        result = self.request.get_output_tensor(0).data
        if self.bf16_output:  # OpenVINO exposes bf16 buffers under a 16-bit numpy dtype: reinterpret
            return result.view(ml_dtypes.bfloat16).copy()
        return result.astype(np.float32, copy=True)

    def release_memory(self) -> None:
        """Free the compiled model's working memory (~0.4 GB for a TS-3mm patch); the next ``run`` allocates it
        again."""
        self.compiled.release_memory()

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
            "cache_dir": str(self.cache_dir) if self.cache_dir else None, **self.graph.describe(),
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


def _read_model(core: Any, model: Path | bytes, source: Path | None = None) -> Any:
    """Read a model file, or a serialized ONNX graph derived from ``source``."""
    try:
        return core.read_model(model if isinstance(model, bytes) else str(model))
    except RuntimeError as e:
        raise TuckerTRTError(f"OpenVINO cannot read {source or model}: {_first_line(e)}") from None


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
