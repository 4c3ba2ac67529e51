"""Engine vs FP32 ONNX on ONNX Runtime, through the shared polygraphy comparison (:mod:`tuckertrt.parity.compare`).

The engine runs in polygraphy via the generic ``BackendRunner`` around :class:`TensorRTBackend` (polygraphy's own
TrtRunner only knows full TensorRT, not TensorRT-RTX); the tolerance follows the engine's precision: FP32
engines must match numerically, FP16 engines are judged by argmax agreement.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tuckertrt.engines.sidecar import read_sidecar


def compare_engine(engine: str | Path, onnx_fp32: str | Path, **options: Any) -> dict[str, Any]:
    """Compare ``engine`` with the FP32 ONNX (file or export directory); a JSON-able result for reports.

    ``options`` go to :func:`~tuckertrt.parity.compare.compare_artifacts` (``input_npy``, ``ct``, ``atol``,
    ``min_argmax``); by default the input is the example CT patch normalised with the export manifest's spec.
    """
    from tuckertrt.parity.compare import compare_artifacts

    sidecar = read_sidecar(engine)
    result = compare_artifacts(onnx_fp32, engine, **options)
    return {"engine": Path(engine).name, "precision": sidecar["precision"], "target": sidecar["target"],
            "reference": str(onnx_fp32), **result.to_json()}
