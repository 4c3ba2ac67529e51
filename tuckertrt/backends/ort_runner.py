"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when onnxruntime-gpu and a GPU exist."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from tuckertrt.errors import MissingDependencyError, TuckerTRTError
from tuckertrt.graph.manifest import ONNX_FILES, load_manifest, verify_artifact

if TYPE_CHECKING:
    from tuckertrt.graph.deploy import InferenceGraph

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def resolve_onnx(artifact: Path, precision: str) -> Path:
    """The ONNX file of ``precision`` behind ``artifact`` (a file, or an export dir verified against its manifest)."""
    if precision not in ONNX_FILES:
        raise TuckerTRTError(f"ONNX artifacts exist in {'/'.join(ONNX_FILES)}, not {precision}")
    if artifact.is_dir():
        load_manifest(artifact)
        path = artifact / ONNX_FILES[precision]
        if not path.is_file():
            raise TuckerTRTError(f"{artifact} has no {ONNX_FILES[precision]} (export it with --fp16 for fp16)")
        verify_artifact(path)
        return path
    if not artifact.is_file():
        raise TuckerTRTError(f"ONNX model not found: {artifact}")
    return artifact


def default_providers(requested: Sequence[str] | None = None) -> list[str]:
    """``requested`` if given (each must exist here); else GPU providers when a GPU is usable, then CPU."""
    import onnxruntime as ort

    present = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in present]
        if missing:
            raise TuckerTRTError(f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(present)})")
        return list(requested)
    gpu = [p for p in _GPU_PROVIDERS if p in present] if _gpu_present() else []
    return gpu + ["CPUExecutionProvider"]


def _gpu_present() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False


class OrtBackend:
    """An ONNX graph on ONNX Runtime (graph optimisation level "all", intra-op threads = physical cores)."""

    name = "onnxruntime"

    def __init__(self, model: bytes | Path, precision: str = "fp32", threads: int | None = None,
                 providers: Sequence[str] | None = None, graph: InferenceGraph | None = None):
        """``model``: a file or serialized ONNX; ``graph`` says how it was derived from an artifact (rewrites,
        head split off: ``run`` then returns channels-last features for :attr:`head`)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or physical_cores()
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(source, options, providers=default_providers(providers))
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            where = f" {model}" if isinstance(model, Path) else ""
            raise TuckerTRTError(f"ONNX Runtime cannot load the model{where}: {str(e).splitlines()[0]}") from None
        self.artifact = graph.path if graph else model if isinstance(model, Path) else None
        self.graph = graph
        self.head = graph.head if graph else None
        self.precision = precision
        self.threads = options.intra_op_num_threads
        meta = self.session.get_inputs()[0]
        self.input_name = meta.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in meta.shape)

    @classmethod
    def load(cls, artifact: Path, precision: str = "fp32", threads: int | None = None,
             providers: Sequence[str] | None = None, rewrite: bool = True, head: str = "graph",
             **options: Any) -> "OrtBackend":
        """``rewrite``: run the exactly rewritten graph (:mod:`tuckertrt.graph.rewrite`); ``head``: "graph"
        (``run`` returns logits), "host" or "auto" (features and :attr:`head`, see :mod:`tuckertrt.graph.head`)."""
        if not cls.available():
            raise MissingDependencyError("onnxruntime", purpose="the onnxruntime backend")
        if options:
            raise TuckerTRTError(f"unknown onnxruntime option(s): {', '.join(options)}")
        from tuckertrt.graph.deploy import inference_graph

        graph = inference_graph(resolve_onnx(Path(artifact), precision), rewrite, head)
        model = graph.path if graph.model is None else graph.source
        return cls(model, precision, threads, providers, graph)

    @staticmethod
    def available() -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def run(self, patch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(patch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0].astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"backend": self.name, "precision": self.precision, "provider": self.session.get_providers()[0],
                "providers": self.session.get_providers(), "threads": self.threads,
                "artifact": str(self.artifact) if self.artifact else None,
                "onnxruntime": ort.__version__, "device": ort.get_device(),
                **(self.graph.describe() if self.graph else {})}

    def close(self) -> None:
        self.session = None
