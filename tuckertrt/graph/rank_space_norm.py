"""InstanceNorm of a decomposed layer computed from its rank-space activations (an exact rewrite).

A Tucker layer ends ``core → 1×1×1 projection U (r → C channels) → InstanceNorm(γ, β)``. InstanceNorm of
``y = U z + b`` needs only the statistics of ``z``: ``mean(y) = U mean(z) + b`` and ``var(y_c) = u_cᵀ Σ_z u_c``
with ``Σ_z`` the r×r covariance of ``z``. So the projection and the normalisation become one 1×1×1 convolution
whose weights are built at run time, ``IN(U z + b) = (diag(γ / std(y)) U) (z − mean(z)) + β``; the C-channel
tensor is written once instead of being written, read twice and written again by the normalisation.

The statistics are taken in forms a CPU runtime computes well: the mean of ``z`` as a mean of block means
(average pooling), the covariance of the *centred* ``z`` viewed channels-last as a batch of (voxels × r) matrices
(one batched matrix product, f32 accumulation). Centring first means no variance is a difference of two large
numbers, which matters because bf16 runtimes keep such small tensors in bf16. Only float rounding changes; the
tests check it against the unrewritten graph.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tuckertrt.graph.pattern import GraphIndex, is_pointwise

# Rewrite only where the normalised tensor is big enough for its saved passes to outweigh about twenty small
# nodes, and the rank small enough to be worth it (r ≤ C/2).
MIN_ELEMENTS = 1 << 22
MAX_RANK_FRACTION = 0.5
BATCHES = 512  # matrices in the batched covariance product (parallel work for the runtime)
MEAN_BLOCK = 8  # the mean is a mean of block means (average pooling, then a global average over few blocks)


def normalize_in_rank_space(g: GraphIndex, shapes: dict[str, list[int]]) -> Iterator[bool]:
    """Rewrite every ``1×1×1 Conv → InstanceNormalization`` pair of ``g`` that qualifies (static shape, batch 1,
    r ≤ C/2, large enough); ``shapes``: tensor shapes from ONNX shape inference. Yields once per rewrite."""
    for norm in [n for n in g.graph.node if n.op_type == "InstanceNormalization"]:
        projection = g.producer.get(norm.input[0])
        if not (is_pointwise(projection, g) and g.sole_reader(projection.output[0]) is norm
                and all(name in g.weights for name in norm.input[1:3])):
            continue
        shape = shapes.get(projection.input[0])
        if not (shape and shape[0] == 1 and all(isinstance(d, int) and d > 0 for d in shape)):
            continue
        u = g.matrix(projection.input[1])
        channels, rank = u.shape
        voxels = math.prod(shape[2:])
        if rank > MAX_RANK_FRACTION * channels or voxels * channels < MIN_ELEMENTS:
            continue
        g.replace([projection, norm], _rank_space_nodes(g, norm, projection, u, shape[2:]))
        yield True


def _rank_space_nodes(g: GraphIndex, norm: onnx.NodeProto, projection: onnx.NodeProto, u: np.ndarray,
                      spatial: list[int]) -> list[onnx.NodeProto]:
    channels, rank = u.shape
    ndim, voxels = 2 + len(spatial), math.prod(spatial)
    batches = max(d for d in range(1, BATCHES + 1) if voxels % d == 0)
    rows = voxels // batches
    p = g.scope(norm, "rank_space")
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

    blocks = [max(k for k in range(1, MEAN_BLOCK + 1) if size % k == 0) for size in spatial]
    axis0 = ints("axis0", [0])
    z = projection.input[0]
    return [
        node("AveragePool", [z], "block_means", kernel_shape=blocks, strides=blocks),
        node("GlobalAveragePool", [f"{p}/block_means"], "mean"),
        node("Sub", [z, f"{p}/mean"], "centred"),
        # (1, r, *spatial) viewed channels-last as `batches` matrices of (rows × r): free for a channels-last runtime
        node("Transpose", [f"{p}/centred"], "c_cl", perm=[0, *range(2, ndim), 1]),
        node("Reshape", [f"{p}/c_cl", ints("batch_shape", [batches, rows, rank])], "c_rows"),
        node("Transpose", [f"{p}/c_rows"], "c_cols", perm=[0, 2, 1]),
        node("MatMul", [f"{p}/c_cols", f"{p}/c_rows"], "grams"),
        node("ReduceSum", [f"{p}/grams", axis0], "gram", keepdims=0),
        node("Mul", [f"{p}/gram", const("inv_n", 1.0 / voxels)], "cov"),
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
