"""Exact rewrites of an exported graph for inference: fewer full-resolution memory passes, same function.

The exported ``model.onnx`` keeps the decomposition visible (three convolutions per layer); CPU backends run the
rewritten graph (:func:`optimize`). Three rules:

* **split concatenations**: ``Concat(a, b) -> Conv(W)`` becomes ``Conv(a; W_a) + Conv(b; W_b)``. The
  concatenated tensor (twice the channels, at full resolution in a U-Net decoder) is never written. This
  helps the uncompressed network too, so it is applied to both sides of every comparison.
* **compose linear neighbours**: a convolution whose only reader is a 1×1×1 convolution (or a bias-free 1×1×1
  convolution whose only reader is a convolution) becomes one convolution, when that costs at most
  :data:`COMPOSE_TOLERANCE` times the multiply-accumulates of the two. In a decomposed decoder, after the split, the
  transposed convolution's output projection and the next layer's input projection collapse into the transposed
  convolution. A core composes with its own projections only where the ranks are close to the channel counts
  (DF ≳ 0.8), i.e. where three passes over the activations cost more than one full convolution saves: such a layer
  runs as one convolution with the low-rank kernel, never slower than the original.
* **normalise in rank space** (:mod:`.rank_space_norm`): a decomposed layer's output projection and the
  InstanceNorm after it become one convolution with run-time weights computed from the r-channel core output;
  decomposed layers only, so the uncompressed network is unchanged by it.

Linear maps compose, so only float rounding changes (checked against the unrewritten graph in the tests).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import helper

from tuckertrt.graph.pattern import CONV_OPS, GraphIndex, attrs, is_conv, is_pointwise
from tuckertrt.graph.rank_space_norm import normalize_in_rank_space

# Two convolutions merge while the merged one costs at most this many times their multiply-accumulates: one pass
# over the activations instead of two is worth a few more MACs.
COMPOSE_TOLERANCE = 1.25


def _bias(node: onnx.NodeProto, g: GraphIndex, channels: int) -> np.ndarray:
    return g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(channels)


def _has_bias(node: onnx.NodeProto) -> bool:
    return len(node.input) > 2 and bool(node.input[2])


def _macs_per_output_voxel(node: onnx.NodeProto, g: GraphIndex) -> float:
    """Multiply-accumulates per output voxel (ConvTranspose: per *output* voxel, i.e. divided by the stride)."""
    weight = g.weights[node.input[1]].dims
    kernel = float(np.prod(weight[2:]))
    strides = float(np.prod(attrs(node).get("strides", [1])))
    return weight[0] * weight[1] * (kernel / strides if node.op_type == "ConvTranspose" else kernel)


def _out_axis(node: onnx.NodeProto) -> int:
    """Axis of a weight that indexes output channels: 1 for ConvTranspose (C_in, C_out, k...), else 0."""
    return 1 if node.op_type == "ConvTranspose" else 0


def _split_concats(g: GraphIndex) -> Iterator[bool]:
    for concat in [n for n in g.graph.node if n.op_type == "Concat"]:
        conv = g.sole_reader(concat.output[0])
        if attrs(concat).get("axis") != 1 or conv is None or conv.op_type != "Conv" or not is_conv(conv, g) \
                or conv.input[0] != concat.output[0]:
            continue
        channels = [_channels(name, g) for name in concat.input]
        if None in channels:
            continue
        weight = g.array(conv.input[1])
        bounds = np.cumsum([0, *channels])
        prefix = g.scope(conv, "split")
        parts, sums = [], []
        for i, (name, lo, hi) in enumerate(zip(concat.input, bounds, bounds[1:])):
            inputs = [name, g.add_weight(f"{prefix}/w{i}", weight[:, lo:hi], conv.input[1])]
            if i == 0 and _has_bias(conv):
                inputs.append(conv.input[2])
            parts.append(helper.make_node("Conv", inputs, [f"{prefix}/out{i}"], name=f"{prefix}/conv{i}",
                                          **attrs(conv)))
        total = parts[0].output[0]
        for i, part in enumerate(parts[1:], start=1):
            last = i == len(parts) - 1
            out = conv.output[0] if last else f"{prefix}/sum{i}"
            sums.append(helper.make_node("Add", [total, part.output[0]], [out], name=f"{prefix}/add{i}"))
            total = out
        g.replace([concat, conv], parts + sums)
        yield True


def _channels(tensor: str, g: GraphIndex) -> int | None:
    """Channel count of ``tensor`` when a convolution (seen through elementwise ops) produced it."""
    node = g.producer.get(tensor)
    while node is not None and node.op_type not in CONV_OPS:
        if node.op_type not in ("LeakyRelu", "Relu", "InstanceNormalization", "Add", "Mul", "Sigmoid"):
            return None
        node = g.producer.get(node.input[0])
    if node is None or node.input[1] not in g.weights:
        return None
    dims = g.weights[node.input[1]].dims
    return dims[_out_axis(node)] * (attrs(node).get("group", 1) if node.op_type == "ConvTranspose" else 1)


def _compose_pairs(g: GraphIndex) -> Iterator[bool]:
    for first in list(g.graph.node):
        second = g.sole_reader(first.output[0]) if first.op_type in CONV_OPS else None
        if not (is_conv(first, g) and is_conv(second, g) and second.input[0] == first.output[0]):
            continue
        if is_pointwise(second, g):
            composed = _compose_after(first, second, g)
        elif is_pointwise(first, g) and not _has_bias(first):
            composed = _compose_before(first, second, g)
        else:
            continue
        if composed:
            yield True


def _compose_after(first: onnx.NodeProto, second: onnx.NodeProto, g: GraphIndex) -> bool:
    """``second`` (1×1×1, C_mid→C_out) after ``first``: one node with ``first``'s geometry."""
    w1, w2 = g.array(first.input[1]), g.matrix(second.input[1])
    cost = np.prod(w1.shape[2:]) / (np.prod(attrs(first).get("strides", [1]))
                                    if first.op_type == "ConvTranspose" else 1)
    if cost * w1.shape[1 - _out_axis(first)] * w2.shape[0] > COMPOSE_TOLERANCE * (
            _macs_per_output_voxel(first, g) + _macs_per_output_voxel(second, g)):
        return False
    axis = _out_axis(first)
    weight = np.moveaxis(np.tensordot(w2, np.moveaxis(w1, axis, 0), axes=(1, 0)), 0, axis)
    bias = w2 @ _bias(first, g, w2.shape[1]) + _bias(second, g, w2.shape[0])
    prefix = g.scope(second, "composed")
    node = helper.make_node(first.op_type, [first.input[0], g.add_weight(f"{prefix}/w", weight, first.input[1]),
                                            g.add_weight(f"{prefix}/b", bias, first.input[1])],
                            [second.output[0]], name=prefix, **attrs(first))
    g.replace([first, second], [node])
    return True


def _compose_before(first: onnx.NodeProto, second: onnx.NodeProto, g: GraphIndex) -> bool:
    """Bias-free ``first`` (1×1×1, C_in→C_mid) before ``second``: one node with ``second``'s geometry."""
    w1, w2 = g.matrix(first.input[1]), g.array(second.input[1])
    in_axis = 1 - _out_axis(second)
    stride = float(np.prod(attrs(second).get("strides", [1])))
    first_cost = w1.shape[0] * w1.shape[1] * (stride if second.op_type == "Conv" else 1 / stride)
    composed_cost = _macs_per_output_voxel(second, g) * w1.shape[1] / w1.shape[0]
    if composed_cost > COMPOSE_TOLERANCE * (first_cost + _macs_per_output_voxel(second, g)):
        return False
    weight = np.moveaxis(np.tensordot(np.moveaxis(w2, in_axis, -1), w1, axes=(-1, 0)), -1, in_axis)
    prefix = g.scope(first, "composed")
    inputs = [first.input[0], g.add_weight(f"{prefix}/w", weight, second.input[1]), *second.input[2:]]
    g.replace([first, second], [helper.make_node(second.op_type, inputs, list(second.output), name=prefix,
                                                 **attrs(second))])
    return True


def optimize(model: onnx.ModelProto, rank_space_norm: bool = True) -> tuple[onnx.ModelProto, dict[str, int]]:
    """``model`` rewritten for inference (a copy), and how often each rule fired. ``rank_space_norm``: also
    normalise decomposed layers from their rank-space statistics (:mod:`.rank_space_norm`)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = GraphIndex(model.graph)
    counts = {"split_concats": sum(1 for _ in _split_concats(g))}
    counts["composed_pairs"] = 0
    while next(_compose_pairs(g), False):  # one rewrite at a time: each changes what the next may match
        counts["composed_pairs"] += 1
    if rank_space_norm:
        counts["rank_space_norms"] = sum(1 for _ in normalize_in_rank_space(g, _static_shapes(model)))
    _drop_unused(model.graph)
    return model, counts


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Tensor name → shape, where ONNX shape inference knows every dimension."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in values}


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove initializers nobody reads and shape annotations of tensors nobody produces."""
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    produced = {out for node in graph.node for out in node.output}
    for info in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(info)
