"""InstanceNorm of a decomposed layer computed from its rank-space activations (an exact rewrite).

A Tucker layer ends ``core → 1×1×1 projection U (r → C channels) → InstanceNorm(γ, β)``. InstanceNorm of ``y = U z + b``
needs only the statistics of ``z``: ``mean(y) = U mean(z) + b`` and ``var(y_c) = u_cᵀ Σ_z u_c`` with ``Σ_z`` the r×r
covariance of ``z``. So the projection and the normalisation become one 1×1×1 convolution whose weights are
built at run time, ``IN(U z + b) = (diag(γ / std(y)) U) (z − mean(z)) + β``; the C-channel tensor is written once
instead of being written, read twice and written again by the normalisation.

The statistics are taken where a CPU runtime computes them well: ``z`` is viewed channels-last as a batch of
(voxels × r) matrices, its mean and its covariance are batched matrix products with f32 accumulation, and the
covariance is taken of the *centred* ``z`` so that no variance is a difference of two large numbers (bf16
runtimes keep such small tensors in bf16). Only float rounding changes; the tests check it against the
unrewritten graph.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tuckertrt.graph.pattern import GraphIndex, is_conv, is_pointwise

# Rewrite only where the normalised tensor is big enough for its saved passes to outweigh about twenty small
# nodes, and the rank small enough to be worth it (r ≤ C/2).
MIN_ELEMENTS = 1 << 22
MAX_RANK_FRACTION = 0.5
BATCHES = 512  # rows of the batched mean/covariance products (parallel work for the runtime)


def normalize_in_rank_space(g: GraphIndex, shapes: dict[str, list[int]]) -> Iterator[bool]:
    """Rewrite every ``Conv → 1×1×1 Conv → InstanceNormalization`` chain of ``g``  that
    qualifies; ``shapes`` holds static tensor shapes (from ONNX shape inference). Yields once per rewrite."""
    for norm in [n for n in g.graph.node if n.op_type == "InstanceNormalization"]:
        projection = g.producer.get(norm.input[0])
        if not (is_pointwise(projection, g) and g.sole_reader(projection.output[0]) is norm
                and all(name in g.weights for name in norm.input[1:3])):
            continue
        core = g.producer.get(projection.input[0])
        shape = shapes.get(projection.input[0])
        if not (is_conv(core, g) and g.sole_reader(core.output[0]) is projection and shape and shape[0] == 1
                and all(isinstance(d, int) and d > 0 for d in shape)):
            continue
        u = g.matrix(projection.input[1])
        channels, rank = u.shape
        voxels = math.prod(shape[2:])
        if rank > MAX_RANK_FRACTION * channels or voxels * channels < MIN_ELEMENTS:
            continue
        g.replace([projection, norm], _rank_space_nodes(g, norm, projection, u, len(shape), voxels))
        yield True


def _rank_space_nodes(g: GraphIndex, norm: onnx.NodeProto, projection: onnx.NodeProto, u: np.ndarray, ndim: int,
                      voxels: int) -> list[onnx.NodeProto]:
    channels, rank = u.shape
    batches = max(d for d in range(1, BATCHES + 1) if voxels % d == 0)
    rows = voxels // batches
    p = f"{norm.name}/rank_space"
    like = projection.input[1]
    eps = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)

    def const(name: str, value) -> str:
        return g.add_weight(f"{p}/{name}", np.asarray(value, dtype=np.float64), like)

    def ints(name: str, value: list[int]) -> str:
        g.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), f"{p}/{name}"))
        return f"{p}/{name}"

    def node(op: str, inputs: list[str], out: str, **attrs) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [norm.output[0] if out == "conv" else f"{p}/{out}"], name=f"{p}/{out}",
                                **attrs)

    channels_last = [0, *range(2, ndim), 1]
    batch_shape, axis0 = ints("batch_shape", [batches, rows, rank]), ints("axis0", [0])
    inv_n = const("inv_n", 1.0 / voxels)

    def batched(tensor: str, tag: str) -> list[onnx.NodeProto]:
        """``tensor`` (1, r, *spatial) as ``batches`` matrices of (rows × r), channels-last: a free view."""
        return [node("Transpose", [tensor], f"{tag}_cl", perm=channels_last),
                node("Reshape", [f"{p}/{tag}_cl", batch_shape], f"{tag}_rows")]

    z = projection.input[0]
    return [
        *batched(z, "z"),
        node("MatMul", [const("ones", np.ones((1, rows))), f"{p}/z_rows"], "sums"),
        node("ReduceSum", [f"{p}/sums", axis0], "sum", keepdims=0),
        node("Mul", [f"{p}/sum", inv_n], "mean_row"),
        node("Reshape", [f"{p}/mean_row", ints("mean_shape", [1, rank] + [1] * (ndim - 2))], "mean"),
        node("Sub", [z, f"{p}/mean"], "centred"),
        *batched(f"{p}/centred", "c"),
        node("Transpose", [f"{p}/c_rows"], "c_cols", perm=[0, 2, 1]),
        node("MatMul", [f"{p}/c_cols", f"{p}/c_rows"], "grams"),
        node("ReduceSum", [f"{p}/grams", axis0], "gram", keepdims=0),
        node("Mul", [f"{p}/gram", inv_n], "cov"),
        node("MatMul", [const("u", u), f"{p}/cov"], "u_cov"),
        node("Mul", [f"{p}/u_cov", f"{p}/u"], "u_cov_u"),
        node("ReduceSum", [f"{p}/u_cov_u", ints("axis1", [1])], "var", keepdims=1),
        node("Add", [f"{p}/var", const("eps", eps)], "var_eps"),
        node("Sqrt", [f"{p}/var_eps"], "std"),
        node("Div", [const("gamma", g.array(norm.input[1]).reshape(channels, 1)), f"{p}/std"], "scale"),
        node("Mul", [f"{p}/u", f"{p}/scale"], "w_rows"),
        node("Reshape", [f"{p}/w_rows", ints("w_shape", [channels, rank] + [1] * (ndim - 2))], "w"),
        node("Conv", [f"{p}/centred", f"{p}/w", norm.input[2]], "conv"),
    ]
