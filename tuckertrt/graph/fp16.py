"""The FP16 graph: every op in float16 except InstanceNormalization, float32 graph inputs and outputs.

Why this layout: TensorRT 10.x deprecated and TensorRT 11 removed the FP16 builder flag, so a TensorRT engine's
precision comes from the ONNX types themselves (strongly typed networks). Convolutions, LeakyReLU and Concat run
in float16; InstanceNormalization (a mean/variance reduction over ~1.6 M voxels that loses accuracy and may
overflow in float16) stays float32 with float32 scale/bias, wrapped in one Cast each side; the graph keeps
float32 ``input``/``logits`` so every runner feeds and reads the same arrays. ONNX Runtime's CPU provider runs it.

Why this converter: onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types=True`` and
``op_block_list=["InstanceNormalization"]`` produces exactly that layout for these graphs (one Cast at the input,
one at the output, two per InstanceNormalization, no Cast chains), keeps the blocked node's initializers in float32
and clamps weights outside the float16 range. :func:`to_fp16` checks those properties on every conversion
instead of trusting them, so a converter change that breaks them fails the export.
"""
from __future__ import annotations

import onnx

from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.structure import initializer_types, redundant_casts

KEEP_FP32 = ("InstanceNormalization",)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model`` (float32 I/O and InstanceNormalization), checked as described above."""
    import warnings

    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns for every weight it clamps; the parity check judges the result
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=list(KEEP_FP32))
    check_fp16(converted)
    return converted


def check_fp16(model: onnx.ModelProto) -> None:
    """Raise if ``model`` has Cast chains, non-float32 I/O or float16 InstanceNormalization parameters."""
    chained = redundant_casts(model)
    if chained:
        raise TuckerTRTError(f"FP16 graph has {len(chained)} redundant Cast pair(s), e.g. {chained[0]}")
    for op in KEEP_FP32:
        types = initializer_types(model, op)
        if types - {"FLOAT"}:
            raise TuckerTRTError(f"FP16 graph: {op} parameters are {sorted(types)}, expected FLOAT")
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise TuckerTRTError(f"FP16 graph: {value.name} is not float32")
