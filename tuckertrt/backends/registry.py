"""Backends by name, imported lazily so that a missing optional runtime only matters when it is asked for."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from tuckertrt.backends.base import Backend
from tuckertrt.errors import TuckerTRTError

# name -> "module:Class"; each class offers ``load(artifact, precision=..., **options) -> Backend``
# and ``available() -> bool`` (is its runtime importable here).
BACKENDS: dict[str, str] = {
    "onnxruntime": "tuckertrt.backends.ort_runner:OrtBackend",
    "openvino": "tuckertrt.backends.ov_runner:OpenVinoBackend",
    "tensorrt": "tuckertrt.backends.trt_runner:TensorRTBackend",
}


def backend_class(name: str) -> Any:
    if name not in BACKENDS:
        raise TuckerTRTError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(name: str, artifact: str | Path, precision: str = "fp32", **options: Any) -> Backend:
    """Load ``artifact`` (an ONNX file, or an engine for TensorRT) on backend ``name``."""
    return backend_class(name).load(Path(artifact), precision=precision, **options)


def available_backends() -> list[str]:
    return [n for n in BACKENDS if backend_class(n).available()]
