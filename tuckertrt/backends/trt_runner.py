"""TensorRT and TensorRT-RTX engines on a CUDA GPU, behind the :class:`~tuckertrt.backends.base.Backend` protocol.

Device memory and streams come from cuda-python (``cuda.bindings.runtime``), not torch: the project installs the
CPU build of torch, and TensorRT needs nothing but raw device pointers and a stream, which cuda-python provides
without a second multi-GB CUDA framework. Each I/O tensor gets one device buffer, allocated once per engine at
the largest shape its profile allows, and its address is set on the execution context once; ``run`` then only
copies the patch in, calls ``execute_async_v3`` and copies the logits out. The name-based I/O API used here is
the same in TensorRT 10.x, 11.x and TensorRT-RTX; which module loads an engine is read from its sidecar.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tuckertrt.engines.compat import ensure_compatible, runtime_facts
from tuckertrt.engines.gpu import current_gpu, import_cudart
from tuckertrt.engines.runtime import collecting_logger, import_tensorrt
from tuckertrt.engines.sidecar import read_sidecar, verify_engine_file
from tuckertrt.errors import MissingDependencyError, TuckerTRTError


def _cuda(cudart: ModuleType, result: Any) -> Any:
    """Unwrap a cuda-python ``(err, value...)`` tuple, raising on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise TuckerTRTError(f"CUDA error: {cudart.cudaGetErrorString(err)[1].decode()}")
    return values[0] if len(values) == 1 else values


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: Path, trt: ModuleType, cudart: ModuleType, runtime: Any, engine: Any,
                 sidecar: dict[str, Any]):
        self.path, self.trt, self.cudart, self.sidecar = path, trt, cudart, sidecar
        self.runtime, self.engine = runtime, engine  # the runtime must outlive the engine
        self.precision = sidecar["precision"]
        self.head = None
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TuckerTRTError(f"{path.name}: TensorRT could not create an execution context (GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise TuckerTRTError(f"{path.name} has {len(inputs)} inputs; a segmentation engine has one")
        self.input_name = inputs[0]
        self.output_name = next(n for n in names if n != self.input_name)
        self.input_shape = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))  # -1: dynamic
        self.dynamic = -1 in self.input_shape
        self.max_input = self._max_shape(self.input_name)
        self.context.set_input_shape(self.input_name, self.max_input)
        self.stream = _cuda(cudart, cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, np.dtype]] = {}
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(self.context.get_tensor_shape(name))
            pointer = _cuda(cudart, cudart.cudaMalloc(int(np.prod(shape)) * dtype.itemsize))
            self.buffers[name] = (pointer, dtype)
            self.context.set_tensor_address(name, pointer)

    def _max_shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, or the largest its optimisation profile allows when it is dynamic."""
        shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
        if -1 not in shape:
            return shape
        return tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[2])

    @classmethod
    def available(cls) -> bool:
        """A TensorRT flavour and cuda-python are importable (whether a GPU is present is checked on load)."""
        if import_cudart() is None:
            return False
        for target in ("trt", "rtx"):
            try:
                import_tensorrt(target)
                return True
            except MissingDependencyError:
                continue
        return False

    @classmethod
    def load(cls, artifact: Path, precision: str = "fp32", check: bool = True, head: str = "graph",
             **options: Any) -> "TensorRTBackend":
        """Verify the engine against its sidecar (bytes, then GPU and TensorRT version), then deserialise it.

        An engine's precision was fixed when it was built (its sidecar says which), so ``precision`` is accepted
        for the Backend protocol but does not change anything. ``check=False`` skips the GPU/version comparison
        (TensorRT itself still refuses what it cannot run). An engine keeps the segmentation head: ``head`` "graph"
        or "auto" only.
        """
        if head not in ("graph", "auto"):
            raise TuckerTRTError("a TensorRT engine keeps the segmentation head in the graph; use head='graph'")
        if options:
            raise TuckerTRTError(f"tensorrt backend: unknown option(s) {', '.join(sorted(options))}")
        artifact = Path(artifact)
        sidecar = read_sidecar(artifact)
        verify_engine_file(artifact, sidecar)
        trt = import_tensorrt(sidecar["target"])
        cudart = import_cudart()
        if cudart is None:
            raise MissingDependencyError("cuda-python", "trt", "running TensorRT engines")
        if check:
            ensure_compatible(artifact, sidecar, runtime_facts(sidecar["target"]))
        logger = collecting_logger(trt)
        runtime = trt.Runtime(logger)
        if sidecar["flags"].get("version_compatible"):
            runtime.engine_host_code_allowed = True
        data = artifact.read_bytes()
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise TuckerTRTError(f"{artifact.name} could not be deserialised: "
                                 + " | ".join(_validity(trt, runtime, data) + logger.errors[:2]))
        return cls(artifact, trt, cudart, runtime, engine, sidecar)

    def run(self, patch: np.ndarray) -> np.ndarray:
        in_pointer, in_dtype = self.buffers[self.input_name]
        x = np.ascontiguousarray(patch, dtype=in_dtype)
        if x.shape[1:] != self.max_input[1:] or not 1 <= x.shape[0] <= self.max_input[0]:
            raise TuckerTRTError(f"{self.path.name} takes {self.max_input[1:]} patches, batch up to "
                                 f"{self.max_input[0]}; got {x.shape}")
        if self.dynamic:
            self.context.set_input_shape(self.input_name, x.shape)
        cudart, stream = self.cudart, self.stream
        _cuda(cudart, cudart.cudaMemcpyAsync(in_pointer, x.ctypes.data, x.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        self._enqueue()
        out_pointer, out_dtype = self.buffers[self.output_name]
        y = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=out_dtype)
        _cuda(cudart, cudart.cudaMemcpyAsync(y.ctypes.data, out_pointer, y.nbytes,
                                             cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        _cuda(cudart, cudart.cudaStreamSynchronize(stream))
        return y.astype(np.float32, copy=False)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise TuckerTRTError(f"TensorRT failed to run {self.path.name}")

    def time_execute(self, warmup: int = 1, iterations: int = 10) -> list[float]:
        """Milliseconds per ``execute_async_v3`` on the resident buffers (CUDA events, no host copies)."""
        cudart, stream = self.cudart, self.stream
        start, stop = _cuda(cudart, cudart.cudaEventCreate()), _cuda(cudart, cudart.cudaEventCreate())
        try:
            for _ in range(warmup):
                self._enqueue()
            times = []
            for _ in range(iterations):
                _cuda(cudart, cudart.cudaEventRecord(start, stream))
                self._enqueue()
                _cuda(cudart, cudart.cudaEventRecord(stop, stream))
                _cuda(cudart, cudart.cudaEventSynchronize(stop))
                times.append(float(_cuda(cudart, cudart.cudaEventElapsedTime(start, stop))))
            return times
        finally:
            cudart.cudaEventDestroy(start)
            cudart.cudaEventDestroy(stop)

    def describe(self) -> dict[str, Any]:
        gpu = current_gpu()
        return {"backend": self.name, "precision": self.precision, "engine": self.path.name,
                "device": gpu.name if gpu else "cuda", "compute_capability": gpu.sm if gpu else None,
                self.trt.__name__: self.trt.__version__, "input_shape": list(self.input_shape),
                "built_for": self.sidecar["compute_capabilities"]}

    def close(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers.clear()
        self.cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = None


def _validity(trt: ModuleType, runtime: Any, data: bytes) -> list[str]:
    """TensorRT-RTX's own diagnosis of a serialised engine (VERSION_MISMATCH, UNSUPPORTED_CC, ...)."""
    check = getattr(runtime, "get_engine_validity", None)
    if check is None:
        return []
    validity, diagnostics = check(data)
    flags = getattr(trt, "EngineInvalidityDiagnostics", None)
    names = [name for name, value in getattr(flags, "__members__", {}).items() if int(diagnostics) & int(value)]
    return [f"validity {str(validity).rpartition('.')[2]}" + (f" ({', '.join(names)})" if names else "")]
