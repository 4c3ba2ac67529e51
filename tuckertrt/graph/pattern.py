"""Pattern matching on ONNX graphs for the exact rewrites: an index of producers, readers and weights, and the
convolution predicates the rules share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

CONV_OPS = ("Conv", "ConvTranspose")


@dataclass
class GraphIndex:
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

    def scope(self, node: onnx.NodeProto, tag: str) -> str:
        """A fresh name prefix for what a rewrite of ``node`` adds: ``<node name>/<tag>`` (the node's first output
        when it has no name), numbered when a tensor or weight already lives under it. Node names are optional
        and need not be unique in ONNX; the names of added tensors and weights must be."""
        base = f"{node.name or node.output[0]}/{tag}"
        taken = [*self.producer, *self.weights]
        prefix, number = base, 1
        while any(name == prefix or name.startswith(prefix + "/") for name in taken):
            number += 1
            prefix = f"{base}{number}"
        return prefix

    def replace(self, old: list[onnx.NodeProto], new: list[onnx.NodeProto]) -> None:
        position = min(list(self.graph.node).index(n) for n in old)
        for node in old:
            self.graph.node.remove(node)
        for offset, node in enumerate(new):
            self.graph.node.insert(position + offset, node)
        self.refresh()


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def is_conv(node: onnx.NodeProto | None, g: GraphIndex) -> bool:
    return (node is not None and node.op_type in CONV_OPS and node.input[1] in g.weights
            and (len(node.input) < 3 or node.input[2] in g.weights) and attrs(node).get("group", 1) == 1)


def is_pointwise(node: onnx.NodeProto | None, g: GraphIndex) -> bool:
    """A plain 1×1×1 Conv: stride 1, no padding, no dilation effect."""
    if not is_conv(node, g) or node.op_type != "Conv":
        return False
    values = attrs(node)
    return (all(k == 1 for k in g.weights[node.input[1]].dims[2:])
            and all(s == 1 for s in values.get("strides", [1])) and not any(values.get("pads", [0])))
