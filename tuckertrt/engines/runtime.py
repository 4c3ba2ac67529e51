"""The two TensorRT flavours, found at run time: full TensorRT (10.x / 11.x) and TensorRT-RTX.

``target`` is "trt" (package ``tensorrt``: builds for the GPU it runs on, so it needs one) or "rtx" (package
``tensorrt_rtx``: builds ahead of time for a list of compute capabilities, no GPU needed).
"""
from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any

from tuckertrt.engines.gpu import GpuInfo, current_gpu
from tuckertrt.errors import MissingDependencyError, TuckerTRTError, UsageError

TARGETS = ("trt", "rtx")
PACKAGES = {"trt": ("tensorrt", "tensorrt", "trt"), "rtx": ("tensorrt_rtx", "tensorrt-rtx", "rtx")}
ENGINE_TAGS = {"trt": "trt", "rtx": "trtrtx"}
MIN_TENSORRT = (10, 0)  # the name-based I/O API and strongly typed networks as used here


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise UsageError(f"unknown engine target {target!r} (choose from {', '.join(TARGETS)})")
    return target


def import_tensorrt(target: str) -> ModuleType:
    """``tensorrt`` or ``tensorrt_rtx``; a missing (or broken) install is a one-line error."""
    module, package, extra = PACKAGES[check_target(target)]
    try:
        trt = importlib.import_module(module)
    except (ImportError, OSError):
        raise MissingDependencyError(package, extra, "TensorRT engines" if target == "trt"
                                     else "TensorRT-RTX engines") from None
    if target == "trt" and version_of(trt) < MIN_TENSORRT:
        raise TuckerTRTError(f"TensorRT {trt.__version__} is too old: tuckertrt needs TensorRT "
                             f"{version_text(MIN_TENSORRT)} or newer (10.x, 11.x)")
    return trt


def version_of(trt: ModuleType) -> tuple[int, int]:
    """(major, minor) of an imported TensorRT module."""
    match = re.match(r"(\d+)\.(\d+)", getattr(trt, "__version__", ""))
    if not match:
        raise TuckerTRTError(f"cannot read the version of {trt.__name__} ({getattr(trt, '__version__', '?')})")
    return int(match.group(1)), int(match.group(2))


def version_text(version: tuple[int, int] | list[int]) -> str:
    return f"{version[0]}.{version[1]}"


def rtx_compute_capabilities(trt: ModuleType) -> list[int]:
    """The compute capabilities this TensorRT-RTX can build for ahead of time (``ComputeCapability.SMxx``)."""
    names = trt.ComputeCapability.__members__
    return sorted(int(n[2:]) for n in names if re.fullmatch(r"SM\d+", n))


def network_flags(trt: ModuleType) -> int:
    """Creation flags for a strongly typed network: the flag on TensorRT 10.x (accepted and ignored on 11.x,
    where every network is strongly typed); 0 where the flag does not exist."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def collecting_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps the errors (``.errors``, to report them in one line) and drops the chatter."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            # "Thread context has not been set" is logged at INTERNAL_ERROR by TensorRT-RTX and is harmless.
            if int(severity) <= int(trt.ILogger.Severity.ERROR) and "Thread context" not in msg:
                self.errors.append(" ".join(msg.split()))

    return CollectingLogger()


def require_gpu(trt: ModuleType) -> GpuInfo:
    """This machine's GPU, which full TensorRT builds for; a one-line error without one."""
    gpu = current_gpu()
    if gpu is None:
        raise TuckerTRTError(f"no CUDA GPU found: {trt.__name__} {trt.__version__} builds engines for the GPU it "
                             "runs on (use --target rtx for an ahead-of-time TensorRT-RTX build)")
    return gpu


def engine_support(target: str = "trt") -> tuple[bool, str]:
    """Can engines for ``target`` be built here? (ok, reason), for callers that skip the engine step."""
    try:
        trt = import_tensorrt(target)
    except TuckerTRTError as e:  # missing, broken or too old
        return False, str(e)
    label = f"{trt.__name__} {trt.__version__}"
    if target == "rtx":
        ccs = ", ".join(f"SM{cc}" for cc in rtx_compute_capabilities(trt))
        return True, f"{label}: ahead-of-time builds for {ccs} (no GPU needed)"
    try:
        gpu = require_gpu(trt)
    except TuckerTRTError as e:
        return False, str(e)
    return True, f"{label} on {gpu.name} (SM{gpu.sm})"
