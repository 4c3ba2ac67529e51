"""The segmentation head applied after the sliding window instead of inside the graph.

nnU-Net's head is one 1×1×1 convolution (features F → K class logits) and the sliding window averages logits
with Gaussian weights, a linear operation. The two commute, so averaging the *features* and applying the head once
per voxel of the volume gives the same logits (up to float rounding)::

    Σ_t g_t (W f_t + b) / Σ_t g_t  =  W (Σ_t g_t f_t / Σ_t g_t) + b

The graph then ends at the last feature map (F = 32 channels on TotalSegmentator instead of K = 118 logits), in
channels-last layout (the layout CPU runtimes compute in, so nothing is reordered on the way out). Per patch this
saves the head convolution and the largest tensor's reorder and copy; per volume the head runs once per voxel
rather than once per overlapping tile.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from tuckertrt.errors import TuckerTRTError

FEATURES_NAME = "features"


@dataclass
class LinearHead:
    """The removed 1×1×1 convolution: ``weight`` (K, F), ``bias`` (K,)."""

    weight: np.ndarray
    bias: np.ndarray
    _kernels: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @torch.inference_mode()
    def labels(self, features: np.ndarray | torch.Tensor, weights: torch.Tensor | None = None,
               chunk: int = 32768) -> np.ndarray:
        """argmax over classes of ``W f + b`` for channels-last ``features`` (..., F), ``chunk`` voxels at a time;
        with ``weights`` (...), ``features`` are Gaussian-weighted sums and the logits ``W f + w b`` (the argmax
        of dividing by ``w > 0``, without the division). Runs on OpenVINO's CPU plugin in f32 when installed
        (matrix product, bias and argmax in one compiled kernel), else on torch. Ties go to the first class, as
        ``argmax``."""
        flat = as_tensor(features).reshape(-1, self.num_features)
        if flat.dtype not in (torch.float16, torch.float32):
            flat = flat.float()
        w = weights.reshape(-1, 1).float() if weights is not None else None
        kernel = self._kernel(flat.dtype, w is not None)
        out = np.empty(flat.shape[0], dtype=np.uint8 if self.num_classes <= 256 else np.uint16)
        for start in range(0, flat.shape[0], chunk):
            stop = start + chunk
            out[start:stop] = kernel(flat[start:stop], None if w is None else w[start:stop])
        return out.reshape(tuple(features.shape[:-1]))

    def _kernel(self, dtype: torch.dtype, weighted: bool) -> Callable[[torch.Tensor, torch.Tensor | None], Any]:
        key = (dtype, weighted)
        if key not in self._kernels:
            try:
                self._kernels[key] = _OpenVinoArgmax(self.weight, self.bias, dtype, weighted)
            except ImportError:
                self._kernels[key] = _torch_argmax(self.weight, self.bias)
        return self._kernels[key]

    def release_memory(self) -> None:
        """Free the compiled argmax kernels' working memory (allocated again on the next use)."""
        for kernel in self._kernels.values():
            getattr(kernel, "release_memory", lambda: None)()

    def logits(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """``W f + b`` for channels-last ``features`` (..., F), class axis last, float32."""
        f = as_tensor(features).float()
        return (f @ torch.from_numpy(self.weight.T.astype(np.float32)) + torch.from_numpy(
            self.bias.astype(np.float32))).numpy()


def _torch_argmax(weight: np.ndarray, bias: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor | None], Any]:
    w_t = torch.from_numpy(np.ascontiguousarray(weight.T, dtype=np.float32))
    b = torch.from_numpy(bias.astype(np.float32))[None]

    def run(features: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        shift = b if weights is None else weights * b
        return torch.max(torch.addmm(shift, features.float(), w_t), 1).indices  # max: ~1.8× argmax's speed

    return run


class _OpenVinoArgmax:
    """``argmax(W f + (w) b)`` compiled for OpenVINO's CPU plugin in f32 (16-bit ``f`` converted inside), as the
    first class whose logit equals the maximum (``ReduceMax``, ``Equal``, ``Select``, ``ReduceMin``: ~2.5× a
    stable ``TopK`` over the classes, same labels), returned as uint8 (uint16 beyond 256 classes)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, dtype: torch.dtype, weighted: bool):
        import openvino as ov
        import openvino.opset13 as ops

        num_classes = weight.shape[0]
        features = ops.parameter([-1, weight.shape[1]], ov.Type.f16 if dtype == torch.float16 else ov.Type.f32)
        params = [features]
        logits = ops.matmul(ops.convert(features, ov.Type.f32),
                            ops.constant(np.ascontiguousarray(weight.T, np.float32)), False, False)
        shift = ops.constant(bias.astype(np.float32)[None])
        if weighted:
            params.append(ops.parameter([-1, 1], ov.Type.f32))
            shift = ops.multiply(params[1], shift)
        logits = ops.add(logits, shift)
        top = ops.equal(logits, ops.reduce_max(logits, 1, True))
        ids = ops.select(top, ops.constant(np.arange(num_classes, dtype=np.int32)[None]),
                         ops.constant(np.int32(num_classes)))
        first = ops.convert(ops.reduce_min(ids, 1, False), ov.Type.u8 if num_classes <= 256 else ov.Type.u16)
        self.compiled = ov.Core().compile_model(ov.Model([first], params), "CPU",
                                                {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, features: torch.Tensor, weights: torch.Tensor | None) -> np.ndarray:
        inputs = [features.contiguous().numpy()] + ([] if weights is None else [weights.contiguous().numpy()])
        return self.request.infer(inputs, share_inputs=True)[0]

    def release_memory(self) -> None:
        self.compiled.release_memory()


def as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A torch view of a numpy array, bfloat16 (``ml_dtypes``) included."""
    if isinstance(array, torch.Tensor):
        return array
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def split_head(model: onnx.ModelProto) -> tuple[onnx.ModelProto, LinearHead]:
    """``model`` without its final 1×1×1 convolution, ending in channels-last features ``(N, *patch, F)``
    named :data:`FEATURES_NAME`, and the removed convolution as a :class:`LinearHead`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if len(graph.output) != 1:
        raise TuckerTRTError(f"expected one graph output (the logits), found {len(graph.output)}")
    weights = {init.name: init for init in graph.initializer}
    head = next((n for n in graph.node if graph.output[0].name in n.output), None)
    weight = weights.get(head.input[1]) if head is not None and head.op_type == "Conv" else None
    if weight is None or any(d != 1 for d in weight.dims[2:]) or len(weight.dims) < 3:
        raise TuckerTRTError("the graph does not end in a 1x1 convolution (the segmentation head); "
                             "run it with the head in the graph")
    w = numpy_helper.to_array(weight).reshape(weight.dims[0], weight.dims[1]).astype(np.float32)
    b = numpy_helper.to_array(weights[head.input[2]]).astype(np.float32) if len(head.input) > 2 and head.input[2] \
        else np.zeros(w.shape[0], dtype=np.float32)
    rank = len(weight.dims)
    graph.node.remove(head)
    graph.node.append(helper.make_node("Transpose", [head.input[0]], [FEATURES_NAME], name="features/channels_last",
                                       perm=[0, *range(2, rank), 1]))
    logits = graph.output[0]
    dims = [d for d in logits.type.tensor_type.shape.dim]
    shape = [d.dim_param or d.dim_value for d in (dims[:1] + dims[2:])] + [w.shape[1]] if dims else None
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(FEATURES_NAME, onnx.TensorProto.FLOAT, shape))
    for init in [i for i in graph.initializer if i.name in head.input[1:]
                 and not any(i.name in n.input for n in graph.node)]:
        graph.initializer.remove(init)
    return model, LinearHead(w, b)
