"""Graph simplification: onnxsim, or onnxslim as the alternative.

The export keeps a simplified graph only after ONNX Runtime ran it and the unsimplified one on the same input
and they agreed within :data:`SIMPLIFY_TOLERANCE` (see :func:`tuckertrt.parity.export.prove_graphs`).
"""
from __future__ import annotations

import onnx

from tuckertrt.errors import MissingDependencyError, TuckerTRTError

SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
# Original vs simplified, both FP32 on ONNX Runtime: only op fusion/reordering differences are allowed.
SIMPLIFY_TOLERANCE = {"atol": 1e-4, "min_argmax": 0.9999}


def check_simplifier(simplifier: str) -> None:
    if simplifier not in SIMPLIFIERS:
        raise TuckerTRTError(f"unknown simplifier {simplifier!r} (choose from {', '.join(SIMPLIFIERS)})")


def simplify(model: onnx.ModelProto, simplifier: str = "onnxsim") -> tuple[onnx.ModelProto, str]:
    """``model`` simplified (constant folding, dead/identity node removal, shape inference) and the tool used.

    onnxsim falls back to onnxslim when it fails on a graph or is not installed.
    """
    check_simplifier(simplifier)
    if simplifier == "none":
        return model, simplifier
    if simplifier == "onnxsim":
        try:
            import onnxsim

            simplified, ok = onnxsim.simplify(model, check_n=0)  # the export's ORT check replaces onnxsim's own
        except Exception:  # ImportError, or onnxsim's own errors on a graph it cannot handle
            ok = False
        if ok:
            return simplified, simplifier
    try:
        import onnxslim
    except ImportError:
        raise MissingDependencyError("onnxslim", purpose="graph simplification (or use --simplifier none)") from None
    return onnxslim.slim(model), "onnxslim"
