"""Export proven: the graphs :mod:`tuckertrt.graph.export` produces, run on ONNX Runtime against the traced graph
and PyTorch before they are written.

The simplified graph is kept only if ONNX Runtime agrees with the unsimplified one (else the export fails); with
``verify`` the FP32 graph is compared with PyTorch and the FP16 graph with the FP32 graph, and the results go in
the manifest's ``comparisons``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.backends.ort_runner import OrtBackend
from tuckertrt.backends.torch_runner import TorchBackend
from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.export import DEFAULT_OPSET, ExportedGraphs, ExportResult, export_graphs, write_export
from tuckertrt.graph.simplify import SIMPLIFY_TOLERANCE
from tuckertrt.inference.patches import default_patch
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.parity.compare import RANDOM_WEIGHTS_TIE_MARGIN, Tolerance, compare_runs, tolerance_for


def export_model(model: LoadedModel, out_dir: str | Path | None = None, *, patch: tuple[int, ...] | None = None,
                 fp16: bool = True, simplifier: str = "onnxsim", dynamic_batch: int | None = None,
                 opset: int = DEFAULT_OPSET, verify: bool = True, verify_input: np.ndarray | None = None,
                 input_label: str = "given patch") -> ExportResult:
    """Export ``model`` into ``out_dir`` (written atomically: a temp dir renamed into place).

    Writes ``model.onnx`` (FP32), ``model_fp16.onnx`` (if ``fp16``) and ``manifest.json`` (see
    :func:`~tuckertrt.graph.export.export_graphs`). The graphs are proven on ``verify_input`` (default the example
    CT patch) by :func:`prove_graphs` before anything is written. ``dynamic_batch`` (max batch) makes the batch
    axis symbolic.
    """
    exported = export_graphs(model, out_dir, patch=patch, fp16=fp16, simplifier=simplifier,
                             dynamic_batch=dynamic_batch, opset=opset)
    if verify_input is None:
        verify_input, input_label = default_patch(model.spec, exported.patch)
    start = time.perf_counter()
    comparisons = prove_graphs(exported, verify, verify_input, input_label)
    exported.seconds["parity"] = time.perf_counter() - start
    return write_export(exported, comparisons)


def prove_graphs(exported: ExportedGraphs, verify: bool, patch: np.ndarray,
                 input_label: str = "given patch") -> dict[str, dict]:
    """One polygraphy run of every graph (and torch): unsimplified vs simplified must agree (else raise);
    with ``verify`` also torch vs ONNX FP32 and ONNX FP32 vs FP16. Returns the comparisons as JSON."""
    model, graphs = exported.model, exported.graphs
    backends: dict[str, Any] = {}
    pairs: list[tuple[str, str, Tolerance | None]] = []
    if exported.simplifier != "none":
        backends["unsimplified"] = OrtBackend(exported.traced.SerializeToString())
        pairs.append(("unsimplified", "onnx_fp32", Tolerance(**SIMPLIFY_TOLERANCE)))
    if verify:
        backends["torch"] = TorchBackend(model.network, patch.shape, "fp32", device="cpu")
    backends.update({f"onnx_{p}": OrtBackend(g.SerializeToString(), precision=p) for p, g in graphs.items()
                     if verify or p == "fp32"})
    tie_margin = None if model.trained else RANDOM_WEIGHTS_TIE_MARGIN
    if verify:
        pairs += [(a, b, replace(tolerance_for("fp32", p), tie_margin=tie_margin))
                  for a, b, p in (("torch", "onnx_fp32", "fp32"), ("onnx_fp32", "onnx_fp16", "fp16"))
                  if b in backends]
    if not pairs:
        return {}
    try:
        results = compare_runs(backends, pairs, patch, input_label)
    finally:
        for backend in backends.values():
            backend.close()
    simplified = results.pop("unsimplified_vs_onnx_fp32", None)
    if simplified is not None and not simplified.passed:
        raise TuckerTRTError(f"the simplifier changed the graph's output ({simplified.stats}); "
                             f"retry with another --simplifier")
    named = {"original_vs_simplified": simplified} if simplified else {}
    named.update({"torch_vs_onnx_fp32": results.get("torch_vs_onnx_fp32"),
                  "onnx_fp32_vs_fp16": results.get("onnx_fp32_vs_onnx_fp16")})
    return {name: r.to_json() for name, r in named.items() if r is not None}
