"""Per-node profiles on each runtime (ORT profiling JSON, OpenVINO PERF_COUNT), summed by node type and by layer."""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

TUCKER_PARTS = {"project_in", "core", "project_out"}


def layer_of(node_name: str) -> str:
    """The module path a node belongs to: ``/decoder/stages.3/convs/convs.0/all_modules/conv/core/Conv`` →
    ``decoder.stages.3.convs.convs.0.all_modules.conv`` (a Tucker layer's three convs count as one layer)."""
    parts = [p for p in node_name.split("/") if p]
    module = []
    for part in parts:
        if part[:1].isupper() or part in TUCKER_PARTS:
            break
        module.append(part)
    return ".".join(module) or node_name


def summarise(nodes: list[dict[str, Any]], top: int = 15) -> dict[str, Any]:
    """``nodes``: dicts with name, type, seconds. Returns totals by type (with counts) and the costliest layers."""
    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    by_layer: dict[str, float] = defaultdict(float)
    for node in nodes:
        by_type[node["type"]][0] += node["seconds"]
        by_type[node["type"]][1] += 1
        by_layer[layer_of(node["name"])] += node["seconds"]
    types = sorted(by_type.items(), key=lambda kv: -kv[1][0])
    layers = sorted(by_layer.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_seconds": round(sum(n["seconds"] for n in nodes), 6),
        "by_type": {k: {"seconds": round(s, 6), "nodes": c} for k, (s, c) in types},
        "top_layers": {k: round(s, 6) for k, s in layers},
    }


def ort_profile(onnx_path: Path, patch: np.ndarray, threads: int | None = None) -> list[dict[str, Any]]:
    """Run ``patch`` twice through ONNX Runtime (CPU) with profiling on; per-node kernel times of the second run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(2):
            session.run(None, {name: patch})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    return [{"name": e["name"].removesuffix("_kernel_time"), "type": e["args"].get("op_name", "?"),
             "seconds": e["dur"] / 1e6}
            for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= last_start]
