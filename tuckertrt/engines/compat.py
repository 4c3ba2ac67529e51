"""May this engine be deserialised here? Decided from its sidecar and the runtime's facts, before TensorRT is asked.

:func:`compatibility_problems` is a pure function of (sidecar, found), so the decision is testable on any
machine with real sidecars and simulated runtimes; :func:`runtime_facts` reads the real ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuckertrt.engines.gpu import current_gpu
from tuckertrt.engines.runtime import PACKAGES, import_tensorrt, version_of, version_text
from tuckertrt.errors import TuckerTRTError

AMPERE_SM = 80


@dataclass(frozen=True)
class RuntimeFacts:
    """What an engine would meet: the TensorRT flavour and version, and the GPU (``sm`` None: no GPU)."""

    target: str
    version: tuple[int, int]
    sm: int | None
    gpu_name: str = ""


def runtime_facts(target: str) -> RuntimeFacts:
    """The TensorRT flavour ``target`` as installed here and this machine's GPU."""
    version = version_of(import_tensorrt(target))
    gpu = current_gpu()
    return RuntimeFacts(target, version, gpu.sm if gpu else None, gpu.name if gpu else "")


def _version_problem(sidecar: dict[str, Any], found: RuntimeFacts) -> str | None:
    built = tuple(sidecar["tensorrt"]["major_minor"])
    package = PACKAGES[found.target][0]
    if sidecar["flags"].get("version_compatible"):
        if found.version[0] == built[0] and found.version >= built:
            return None
        return (f"{package} {version_text(built)} or a newer {built[0]}.x (version-compatible engine), "
                f"found {version_text(found.version)}")
    if found.version == built:
        return None
    return f"{package} {version_text(built)}, found {version_text(found.version)} (rebuild, or build with " \
           "--version-compatible)"


def _gpu_problem(sidecar: dict[str, Any], found: RuntimeFacts) -> str | None:
    sms = [int(sm) for sm in sidecar["compute_capabilities"]]
    ampere_plus = sidecar["flags"].get("hardware_compat") == "ampere+"
    expected = ("a GPU of SM80 or newer (hardware compatibility ampere+)" if ampere_plus
                else "a GPU of " + " or ".join(f"SM{sm}" for sm in sms))
    if found.sm is None:
        return f"{expected}, found no CUDA GPU"
    if (ampere_plus and found.sm >= AMPERE_SM) or found.sm in sms:
        return None
    gpu = f" ({found.gpu_name})" if found.gpu_name else ""
    return f"{expected}, found SM{found.sm}{gpu}"


def compatibility_problems(sidecar: dict[str, Any], found: RuntimeFacts) -> list[str]:
    """Why the engine described by ``sidecar`` cannot run on ``found``: one "expected …, found …" each."""
    if sidecar.get("target") != found.target:
        built_with = PACKAGES.get(sidecar.get("target", ""), ("an unknown TensorRT",))[0]
        return [f"an engine built with {built_with} needs {built_with}, found {PACKAGES[found.target][0]}"]
    problems = [_version_problem(sidecar, found), _gpu_problem(sidecar, found)]
    return [p for p in problems if p]


def ensure_compatible(engine: str | Path, sidecar: dict[str, Any], found: RuntimeFacts) -> None:
    """Raise a one-line error naming what the engine expected and what was found."""
    problems = compatibility_problems(sidecar, found)
    if problems:
        raise TuckerTRTError(f"{Path(engine).name} cannot run here: expected " + "; expected ".join(problems))
