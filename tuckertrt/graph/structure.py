"""Structural facts and checks of an ONNX graph: op counts, conv layers, shared weights, Cast pairs."""
from __future__ import annotations

import hashlib
from collections import Counter

import onnx

from tuckertrt.errors import TuckerTRTError

CONV_OPS = ("Conv", "ConvTranspose")
TUCKER_PARTS = ("project_in", "core", "project_out")


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in model.graph.node))


def conv_layers(model: onnx.ModelProto) -> list[str]:
    """Module name of every Conv/ConvTranspose node, read from its weight initializer (``<module>.weight``)."""
    return [node.input[1].removesuffix(".weight") for node in model.graph.node if node.op_type in CONV_OPS]


def duplicated_initializers(model: onnx.ModelProto) -> list[list[str]]:
    """Groups of initializers with identical dtype, shape and bytes (a weight stored more than once)."""
    groups: dict[str, list[str]] = {}
    for init in model.graph.initializer:
        data = init.raw_data or onnx.numpy_helper.to_array(init).tobytes()
        key = hashlib.sha256(f"{init.data_type}{list(init.dims)}".encode() + data).hexdigest()
        groups.setdefault(key, []).append(init.name)
    return [names for names in groups.values() if len(names) > 1]


def redundant_casts(model: onnx.ModelProto) -> list[str]:
    """Cast nodes that read the output of another Cast (a pair that a converter should have fused away)."""
    produced_by_cast = {out for node in model.graph.node if node.op_type == "Cast" for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "Cast" and node.input[0] in produced_by_cast]


def initializer_types(model: onnx.ModelProto, op_type: str) -> set[str]:
    """Element types of the initializers that feed nodes of ``op_type`` (e.g. InstanceNormalization's scale/bias)."""
    types = {init.name: onnx.TensorProto.DataType.Name(init.data_type) for init in model.graph.initializer}
    return {types[name] for node in model.graph.node if node.op_type == op_type
            for name in node.input if name in types}


def check_conv_layers(model: onnx.ModelProto, executed: list[str], ranks: dict[str, list[int]]) -> dict[str, int]:
    """Check that the graph holds exactly the convolutions the network ran, three per decomposed layer.

    ``executed`` lists the conv modules a forward pass called (TuckerConv parts included), ``ranks`` the
    decomposed layers. Returns the counts; raises if the graph lost, merged or duplicated a conv.
    """
    in_graph = Counter(conv_layers(model))
    if in_graph != Counter(executed):
        missing = sorted(set(executed) - set(in_graph))
        extra = sorted(set(in_graph) - set(executed))
        raise TuckerTRTError(f"ONNX graph convolutions differ from the network's: missing {missing[:3]}, "
                             f"unexpected {extra[:3]}")
    decomposed = [layer for layer in ranks if f"{layer}.core" in in_graph]
    nodes = {node.input[1].removesuffix(".weight"): node for node in model.graph.node if node.op_type in CONV_OPS}
    for layer in decomposed:
        chain = [nodes.get(f"{layer}.{part}") for part in TUCKER_PARTS]
        if None in chain or any(a.output[0] != b.input[0] for a, b in zip(chain, chain[1:])):
            raise TuckerTRTError(f"decomposed layer {layer} is not a Conv(1x1x1) -> Conv(k) -> Conv(1x1x1) "
                                 f"sequence in the graph")
    return {"conv_nodes": sum(in_graph.values()), "decomposed_layers": len(decomposed),
            "plain_convs": sum(in_graph.values()) - 3 * len(decomposed)}
