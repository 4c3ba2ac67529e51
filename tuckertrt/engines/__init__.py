"""TensorRT / TensorRT-RTX engines: build from ONNX, name, describe (sidecar), check before loading."""
from tuckertrt.engines.builder import BuildOptions, BuildResult, build_engine
from tuckertrt.engines.compat import RuntimeFacts, compatibility_problems, ensure_compatible, runtime_facts
from tuckertrt.engines.runtime import engine_support
from tuckertrt.engines.sidecar import read_sidecar, sidecar_path, verify_engine_file

__all__ = ["BuildOptions", "BuildResult", "RuntimeFacts", "build_engine", "compatibility_problems",
           "engine_support", "ensure_compatible", "read_sidecar", "runtime_facts", "sidecar_path",
           "verify_engine_file"]
