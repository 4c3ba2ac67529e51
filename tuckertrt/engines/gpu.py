"""Which CUDA GPU is here (name, compute capability, driver), asked without TensorRT.

cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` in older releases) is preferred; ``nvidia-smi`` is the
fallback, so a machine with a driver but no Python CUDA package is still recognised.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, replace
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device. ``sm`` is the compute capability as an integer (8.6 -> 86); ``driver`` is the driver
    release (nvidia-smi), ``cuda_driver`` the CUDA version that driver supports, ``cuda_runtime`` cudart's."""

    name: str
    sm: int
    driver: str = ""
    cuda_driver: str = ""
    cuda_runtime: str = ""

    @property
    def compute_capability(self) -> str:
        return f"{self.sm // 10}.{self.sm % 10}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "compute_capability": self.compute_capability}


def import_cudart() -> ModuleType | None:
    """The CUDA runtime bindings of cuda-python, or None when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            return None
    return cudart


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def _gpu_from_cudart(cudart: ModuleType, device: int) -> GpuInfo | None:
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count <= device:
        return None
    err, prop = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    _, driver = cudart.cudaDriverGetVersion()
    _, runtime = cudart.cudaRuntimeGetVersion()
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name=name, sm=prop.major * 10 + prop.minor, cuda_driver=_cuda_version(driver),
                   cuda_runtime=_cuda_version(runtime))


def _gpu_from_nvidia_smi(device: int) -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split(",") for line in out.strip().splitlines()]
    if len(rows) <= device or len(rows[device]) < 3:
        return None
    name, cc, driver = (field.strip() for field in rows[device][:3])
    major, _, minor = cc.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return GpuInfo(name=name, sm=int(major) * 10 + int(minor), driver=driver)


def current_gpu(device: int = 0) -> GpuInfo | None:
    """The CUDA device ``device`` of this machine, or None when there is no usable CUDA GPU."""
    cudart = import_cudart()
    gpu = _gpu_from_cudart(cudart, device) if cudart is not None else None
    smi = _gpu_from_nvidia_smi(device)
    if gpu is None:
        return smi
    return replace(gpu, driver=smi.driver) if smi is not None else gpu
