"""Exact rewrites of an exported graph for inference: fewer full-resolution memory passes, same function.

The exported ``model.onnx`` keeps the decomposition visible (three convolutions per layer); CPU backends run the
rewritten graph (:func:`optimize`). Two rules, applied until nothing changes:

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

Linear maps compose, so only float rounding changes (checked against the unrewritten graph in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONV_OPS = ("Conv", "ConvTranspose")
# Two convolutions merge while the merged one costs at most this many times their multiply-accumulates: one pass
# over the activations instead of two is worth a few more MACs.
COMPOSE_TOLERANCE = 1.25


@dataclass
class _Graph:
    """Index of a graph for pattern matching: producers, readers, initializers."""

    graph: onnx.GraphProto

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.weights = {init.name: init for init in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.weights[name]).astype(np.float64)

    def matrix(self, name: str) -> np.ndarray:
        """A 1×1(×1) convolution weight as a (C_out, C_in) matrix."""
        array = self.array(name)
        return array.reshape(array.shape[0], array.shape[1])

    def sole_reader(self, tensor: str) -> onnx.NodeProto | None:
        readers = self.readers.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in self.outputs else None

    def add_weight(self, name: str, value: np.ndarray, like: str) -> str:
        dtype = numpy_helper.to_array(self.weights[like]).dtype
        self.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
        return name

    def replace(self, old: list[onnx.NodeProto], new: list[onnx.NodeProto]) -> None:
        position = min(list(self.graph.node).index(n) for n in old)
        for node in old:
            self.graph.node.remove(node)
        for offset, node in enumerate(new):
            self.graph.node.insert(position + offset, node)
        self.refresh()


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_conv(node: onnx.NodeProto | None, g: _Graph) -> bool:
    return (node is not None and node.op_type in CONV_OPS and node.input[1] in g.weights
            and (len(node.input) < 3 or node.input[2] in g.weights) and _attrs(node).get("group", 1) == 1)


def _is_pointwise(node: onnx.NodeProto | None, g: _Graph) -> bool:
    """A plain 1×1×1 Conv: stride 1, no padding, no dilation effect."""
    if not _is_conv(node, g) or node.op_type != "Conv":
        return False
    attrs = _attrs(node)
    return (all(k == 1 for k in g.weights[node.input[1]].dims[2:])
            and all(s == 1 for s in attrs.get("strides", [1])) and not any(attrs.get("pads", [0])))


def _bias(node: onnx.NodeProto, g: _Graph, channels: int) -> np.ndarray:
    return g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(channels)


def _has_bias(node: onnx.NodeProto) -> bool:
    return len(node.input) > 2 and bool(node.input[2])


def _macs_per_output_voxel(node: onnx.NodeProto, g: _Graph) -> float:
    """Multiply-accumulates per output voxel (ConvTranspose: per *output* voxel, i.e. divided by the stride)."""
    weight = g.weights[node.input[1]].dims
    kernel = float(np.prod(weight[2:]))
    strides = float(np.prod(_attrs(node).get("strides", [1])))
    return weight[0] * weight[1] * (kernel / strides if node.op_type == "ConvTranspose" else kernel)


def _out_axis(node: onnx.NodeProto) -> int:
    """Axis of a weight that indexes output channels: 1 for ConvTranspose (C_in, C_out, k...), else 0."""
    return 1 if node.op_type == "ConvTranspose" else 0


def _split_concats(g: _Graph) -> Iterator[bool]:
    for concat in [n for n in g.graph.node if n.op_type == "Concat"]:
        conv = g.sole_reader(concat.output[0])
        if _attrs(concat).get("axis") != 1 or conv is None or conv.op_type != "Conv" or not _is_conv(conv, g) \
                or conv.input[0] != concat.output[0]:
            continue
        channels = [_channels(name, g) for name in concat.input]
        if None in channels:
            continue
        weight = g.array(conv.input[1])
        bounds = np.cumsum([0, *channels])
        prefix = f"{conv.name}/split"
        parts, sums = [], []
        for i, (name, lo, hi) in enumerate(zip(concat.input, bounds, bounds[1:])):
            inputs = [name, g.add_weight(f"{prefix}/w{i}", weight[:, lo:hi], conv.input[1])]
            if i == 0 and _has_bias(conv):
                inputs.append(conv.input[2])
            parts.append(helper.make_node("Conv", inputs, [f"{prefix}/out{i}"], name=f"{prefix}/conv{i}",
                                          **_attrs(conv)))
        total = parts[0].output[0]
        for i, part in enumerate(parts[1:], start=1):
            last = i == len(parts) - 1
            out = conv.output[0] if last else f"{prefix}/sum{i}"
            sums.append(helper.make_node("Add", [total, part.output[0]], [out], name=f"{prefix}/add{i}"))
            total = out
        g.replace([concat, conv], parts + sums)
        yield True


def _channels(tensor: str, g: _Graph) -> int | None:
    """Channel count of ``tensor`` when a convolution (seen through elementwise ops) produced it."""
    node = g.producer.get(tensor)
    while node is not None and node.op_type not in CONV_OPS:
        if node.op_type not in ("LeakyRelu", "Relu", "InstanceNormalization", "Add", "Mul", "Sigmoid"):
            return None
        node = g.producer.get(node.input[0])
    if node is None or node.input[1] not in g.weights:
        return None
    dims = g.weights[node.input[1]].dims
    return dims[_out_axis(node)] * (_attrs(node).get("group", 1) if node.op_type == "ConvTranspose" else 1)


def _compose_pairs(g: _Graph) -> Iterator[bool]:
    for first in list(g.graph.node):
        second = g.sole_reader(first.output[0]) if first.op_type in CONV_OPS else None
        if not (_is_conv(first, g) and _is_conv(second, g) and second.input[0] == first.output[0]):
            continue
        if _is_pointwise(second, g):
            composed = _compose_after(first, second, g)
        elif _is_pointwise(first, g) and not _has_bias(first):
            composed = _compose_before(first, second, g)
        else:
            continue
        if composed:
            yield True


def _compose_after(first: onnx.NodeProto, second: onnx.NodeProto, g: _Graph) -> bool:
    """``second`` (1×1×1, C_mid→C_out) after ``first``: one node with ``first``'s geometry."""
    w1, w2 = g.array(first.input[1]), g.matrix(second.input[1])
    cost = np.prod(w1.shape[2:]) / (np.prod(_attrs(first).get("strides", [1]))
                                    if first.op_type == "ConvTranspose" else 1)
    if cost * w1.shape[1 - _out_axis(first)] * w2.shape[0] > COMPOSE_TOLERANCE * (
            _macs_per_output_voxel(first, g) + _macs_per_output_voxel(second, g)):
        return False
    axis = _out_axis(first)
    weight = np.moveaxis(np.tensordot(w2, np.moveaxis(w1, axis, 0), axes=(1, 0)), 0, axis)
    bias = w2 @ _bias(first, g, w2.shape[1]) + _bias(second, g, w2.shape[0])
    prefix = f"{second.name}/composed"
    node = helper.make_node(first.op_type, [first.input[0], g.add_weight(f"{prefix}/w", weight, first.input[1]),
                                            g.add_weight(f"{prefix}/b", bias, first.input[1])],
                            [second.output[0]], name=prefix, **_attrs(first))
    g.replace([first, second], [node])
    return True


def _compose_before(first: onnx.NodeProto, second: onnx.NodeProto, g: _Graph) -> bool:
    """Bias-free ``first`` (1×1×1, C_in→C_mid) before ``second``: one node with ``second``'s geometry."""
    w1, w2 = g.matrix(first.input[1]), g.array(second.input[1])
    in_axis = 1 - _out_axis(second)
    stride = float(np.prod(_attrs(second).get("strides", [1])))
    first_cost = w1.shape[0] * w1.shape[1] * (stride if second.op_type == "Conv" else 1 / stride)
    composed_cost = _macs_per_output_voxel(second, g) * w1.shape[1] / w1.shape[0]
    if composed_cost > COMPOSE_TOLERANCE * (first_cost + _macs_per_output_voxel(second, g)):
        return False
    weight = np.moveaxis(np.tensordot(np.moveaxis(w2, in_axis, -1), w1, axes=(-1, 0)), -1, in_axis)
    prefix = f"{first.name}/composed"
    inputs = [first.input[0], g.add_weight(f"{prefix}/w", weight, second.input[1]), *second.input[2:]]
    g.replace([first, second], [helper.make_node(second.op_type, inputs, list(second.output), name=prefix,
                                                 **_attrs(second))])
    return True


def optimize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """``model`` rewritten for inference (a copy), and how often each rule fired."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model.graph)
    counts = {"split_concats": sum(1 for _ in _split_concats(g))}
    counts["composed_pairs"] = 0
    while next(_compose_pairs(g), False):  # one rewrite at a time: each changes what the next may match
        counts["composed_pairs"] += 1
    _drop_unused(model.graph)
    return model, counts


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove initializers nobody reads and shape annotations of tensors nobody produces."""
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    produced = {out for node in graph.node for out in node.output}
    for info in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(info)
