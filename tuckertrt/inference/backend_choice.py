"""Pick the fastest installed runtime that runs the model being built faithfully (the CPU default)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.backends.registry import backend_class, open_backend
from tuckertrt.inference.labels import agreement, argmax_labels, output_labels
from tuckertrt.inference.timing import interleaved
from tuckertrt.errors import TuckerTRTError

# (backend, precision) in order of preference when timings tie; ONNX Runtime f32 is the universal fallback.
CPU_CANDIDATES = (("openvino", "bf16"), ("openvino", "fp32"), ("onnxruntime", "fp32"))


@dataclass
class BackendChoice:
    backend: str
    precision: str
    reason: str
    candidates: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "reason": self.reason,
                "candidates": self.candidates}


def choose_backend(onnx: Path, patch: np.ndarray, reference_logits: np.ndarray, gate: float = 0.995,
                   rounds: int = 2, candidates=CPU_CANDIDATES) -> BackendChoice:
    """Time each available candidate on ``patch``; keep those whose argmax agrees with ``reference_logits``
    (the same model in PyTorch f32) on at least ``gate`` of the voxels; choose the fastest of them."""
    reference = argmax_labels(reference_logits)
    rows, runners, passing = [], {}, {}
    for backend, precision in candidates:
        row: dict[str, Any] = {"backend": backend, "precision": precision}
        rows.append(row)
        if not backend_class(backend).available():
            row["skipped"] = "not installed"
            continue
        try:
            runner = open_backend(backend, onnx, precision=precision, head="auto")
        except TuckerTRTError as e:
            row["skipped"] = str(e)
            continue
        row["precision"] = runner.precision  # e.g. bf16 falls back to f32 on CPUs without it
        if getattr(runner, "graph", None) is not None:  # the exact rewrites and where the head runs
            row.update(runner.graph.describe())
        row["agreement"] = round(agreement(reference, output_labels(runner, runner.run(patch))), 6)
        row["passes"] = row["agreement"] >= gate
        if row["passes"]:
            runners[(backend, precision)], passing[(backend, precision)] = runner, row
        else:
            runner.close()
    if not runners:
        raise TuckerTRTError("no installed backend reproduces the model within the parity gate: " + "; ".join(
            f"{r['backend']} {r['precision']}: {r.get('skipped') or r.get('agreement')}" for r in rows))
    timings = interleaved({k: (lambda r=r: r.run(patch)) for k, r in runners.items()}, rounds=rounds, warmup=0)
    for key, runner in runners.items():
        passing[key]["median_s"] = round(timings[key].median, 4)
        runner.close()
    best = min(timings, key=lambda k: timings[k].median)
    chosen = passing[best]
    reason = (f"fastest of {len(runners)} installed runtimes passing the parity gate (argmax agreement ≥ {gate} "
              f"with PyTorch f32 on a real-CT patch): {chosen['median_s']:.3f} s/patch, "
              f"agreement {chosen['agreement']:.4f}")
    return BackendChoice(best[0], chosen["precision"], reason, rows)
