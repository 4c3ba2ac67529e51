"""Graph simplification: onnxsim, or onnxslim as the alternative.

The export keeps a simplified graph only after ONNX Runtime ran it and the unsimplified one on the same input
and they agreed within :data:`SIMPLIFY_TOLERANCE` (see :func:`tuckertrt.graph.export.export_model`).
"""
from __future__ import annotations

import onnx

from tuckertrt.errors import MissingDependencyError, TuckerTRTError

SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
# Original vs simplified, both FP32 on ONNX Runtime: only op fusion/reordering differences are allowed.
SIMPLIFY_TOLERANCE = {"atol": 1e-4, "min_argmax": 0.9999}


def simplify(model: onnx.ModelProto, simplifier: str = "onnxsim") -> onnx.ModelProto:
    """``model`` simplified by ``simplifier`` (constant folding, dead/identity node removal, shape inference)."""
    if simplifier == "none":
        return model
    if simplifier == "onnxsim":
        try:
            import onnxsim
        except ImportError:
            raise MissingDependencyError("onnxsim", purpose="--simplifier onnxsim (or use onnxslim)") from None
        simplified, ok = onnxsim.simplify(model, check_n=0)  # the export's ORT check replaces onnxsim's own
        if not ok:
            raise TuckerTRTError("onnxsim could not simplify the graph; retry with --simplifier onnxslim")
        return simplified
    if simplifier == "onnxslim":
        try:
            import onnxslim
        except ImportError:
            raise MissingDependencyError("onnxslim", purpose="--simplifier onnxslim (or use onnxsim)") from None
        return onnxslim.slim(model)
    raise TuckerTRTError(f"unknown simplifier {simplifier!r} (choose from {', '.join(SIMPLIFIERS)})")
