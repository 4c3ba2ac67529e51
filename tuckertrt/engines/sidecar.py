"""``<engine>.json`` beside every engine: what it was built from, for which GPUs, with which TensorRT."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import read_json, sha256_file

SIDECAR_FORMAT = "tuckertrt-engine/1"
AHEAD_OF_TIME = "ahead-of-time, no GPU"
# The sidecar fields other code reads, and the JSON type each must have.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "engine_bytes": int, "engine_sha256": str, "target": str, "tensorrt": dict, "flags": dict, "input": dict,
    "gpu": (dict, str, type(None)), "compute_capabilities": list, "profile": (dict, type(None)),
}


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine``, or a one-line error when the engine or its sidecar is missing or unreadable."""
    engine = Path(engine)
    if not engine.is_file():
        raise TuckerTRTError(f"engine not found: {engine}")
    path = sidecar_path(engine)
    if not path.is_file():
        raise TuckerTRTError(f"{engine.name} has no sidecar {path.name}: cannot tell which GPU and TensorRT "
                             "it was built for (rebuild it with tuckertrt engine)")
    sidecar = read_json(path, "engine sidecar")
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise TuckerTRTError(f"{path} is not a {SIDECAR_FORMAT} sidecar")
    wrong = [key for key, kind in _FIELD_TYPES.items() if key in sidecar and not isinstance(sidecar[key], kind)]
    if wrong:
        raise TuckerTRTError(f"engine sidecar {path} is malformed: wrong type for {', '.join(wrong)}")
    return sidecar


def verify_engine_file(engine: str | Path, sidecar: dict[str, Any]) -> None:
    """Refuse an engine whose bytes are not the ones that were built (truncated, corrupted, replaced)."""
    engine = Path(engine)
    if engine.stat().st_size != sidecar.get("engine_bytes") or sha256_file(engine) != sidecar.get("engine_sha256"):
        raise TuckerTRTError(f"{engine} is corrupt or was replaced: its size/sha256 differ from "
                             f"{sidecar_path(engine).name}; rebuild it")


def _gpu_line(sidecar: dict[str, Any]) -> str:
    gpu = sidecar.get("gpu")
    if not isinstance(gpu, dict):
        return str(gpu)
    versions = ", ".join(f"{k} {gpu[k]}" for k in ("driver", "cuda_driver", "cuda_runtime") if gpu.get(k))
    return f"{gpu.get('name')} ({versions})" if versions else str(gpu.get("name"))


def describe_sidecar(sidecar: dict[str, Any]) -> list[str]:
    """Human-readable lines for ``tuckertrt inspect``."""
    flags = sidecar.get("flags", {})
    trt = sidecar.get("tensorrt", {})
    shown_flags = ", ".join(f"{k}={v}" for k, v in flags.items() if v not in (None, False))
    rows = [
        ("engine", f"{sidecar.get('engine')} ({sidecar.get('engine_bytes', 0) / 2**20:.1f} MiB)"),
        ("model", f"{sidecar.get('model')}, DF {sidecar.get('df')}, {sidecar.get('precision')}"),
        ("input", f"{sidecar.get('input', {}).get('name')} {sidecar.get('input', {}).get('shape')}"),
        ("profile", sidecar.get("profile") or "static shapes"),
        ("built with", f"{trt.get('package')} {trt.get('version')} (ONNX parser {trt.get('onnx_parser')})"),
        ("built on", _gpu_line(sidecar)),
        ("runs on", ", ".join(f"SM{sm}" for sm in sidecar.get("compute_capabilities", []))
         + (" and newer (hardware compatibility ampere+)" if flags.get("hardware_compat") else "")),
        ("flags", shown_flags or "none"),
        ("source ONNX", f"{sidecar.get('source_onnx')} sha256 {str(sidecar.get('source_onnx_sha256'))[:16]}…"),
        ("engine sha256", sidecar.get("engine_sha256")),
        ("build time", f"{sidecar.get('build_seconds')} s, {sidecar.get('built_at')}"),
    ]
    return [f"{key:<14} {value}" for key, value in rows]
