"""Every runtime by name, PyTorch included: the one place backend names are listed. Runtimes are imported lazily,
so that a missing optional runtime only matters when it is asked for."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from tuckertrt.backends.base import Backend
from tuckertrt.errors import TuckerTRTError
from tuckertrt.heap import trim_heap

# name -> "module:Class"; each class offers ``load(artifact, precision=..., **options) -> Backend``
# and ``available() -> bool`` (is its runtime importable here).
BACKENDS: dict[str, str] = {
    "torch": "tuckertrt.backends.torch_runner:TorchBackend",
    "onnxruntime": "tuckertrt.backends.ort_runner:OrtBackend",
    "openvino": "tuckertrt.backends.ov_runner:OpenVinoBackend",
    "tensorrt": "tuckertrt.backends.trt_runner:TensorRTBackend",
}
AUTO = "auto"  # not a runtime: the fastest faithful one, chosen and cached (tuckertrt.bench.auto_backend)
# Runtimes that load an exported artifact (ONNX, or a TensorRT engine); torch runs the model itself.
ARTIFACT_BACKENDS = tuple(name for name in BACKENDS if name != "torch")
# The CPU runtimes that run ONNX exports (what build/bench validate and time on).
ONNX_BACKENDS = ("onnxruntime", "openvino")


def backend_class(name: str) -> Any:
    if name not in BACKENDS:
        raise TuckerTRTError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(name: str, artifact: Any, precision: str = "fp32", **options: Any) -> Backend:
    """Load ``artifact`` on backend ``name``: an ONNX file or export folder, an engine for TensorRT, a loaded
    model (or a network with ``input_shape=``) for torch. What loading freed is handed back to the system."""
    if name != "torch":
        artifact = Path(artifact)
    backend = backend_class(name).load(artifact, precision=precision, **options)
    trim_heap()
    return backend


def available_backends() -> list[str]:
    return [n for n in BACKENDS if backend_class(n).available()]
