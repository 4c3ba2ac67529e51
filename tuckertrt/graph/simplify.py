"""Graph simplification (onnxsim, onnxslim as the alternative), kept only if ONNX Runtime says it is equivalent."""
from __future__ import annotations

import onnx

from tuckertrt.errors import MissingDependencyError, TuckerTRTError

SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
# Original vs simplified, both FP32 on ONNX Runtime: only op fusion/reordering differences are allowed.
SIMPLIFY_TOLERANCE = (1e-4, 0.9999)


def simplify(model: onnx.ModelProto, simplifier: str = "onnxsim") -> onnx.ModelProto:
    """``model`` simplified by ``simplifier`` (constant folding, dead/identity node removal, shape inference)."""
    if simplifier == "none":
        return model
    if simplifier == "onnxsim":
        try:
            import onnxsim
        except ImportError:
            raise MissingDependencyError("onnxsim", purpose="--simplifier onnxsim (or use onnxslim)") from None
        simplified, ok = onnxsim.simplify(model, check_n=0)  # our own ORT check follows in simplify_checked
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


def simplify_checked(model: onnx.ModelProto, simplifier: str, patch) -> tuple[onnx.ModelProto, dict | None]:
    """Simplify, run original and simplified on ONNX Runtime on ``patch``; keep the result only if they agree.

    Returns the simplified graph and the comparison (JSON), or the unchanged graph and None for "none".
    """
    if simplifier == "none":
        return model, None
    from tuckertrt.backends.ort_runner import OrtBackend
    from tuckertrt.parity.compare import Tolerance, compare_backends

    simplified = simplify(model, simplifier)
    original = OrtBackend(model.SerializeToString())
    candidate = OrtBackend(simplified.SerializeToString())
    try:
        result = compare_backends(original, candidate, patch, Tolerance(*SIMPLIFY_TOLERANCE),
                                  labels=("original", simplifier))
    finally:
        original.close()
        candidate.close()
    if not result.passed:
        raise TuckerTRTError(f"{simplifier} changed the graph's output ({result.stats}); "
                             f"retry with another --simplifier")
    return simplified, result.to_json()
