"""Post-training static INT8 quantisation with calibration on real CT patches.

* :func:`quantize_qdq` — explicit Q/DQ ONNX (ONNX Runtime's static quantisation, symmetric int8 activations and
  per-channel weights: runs on ONNX Runtime and is what TensorRT's explicit quantisation expects).
* :func:`quantize_openvino` — NNCF post-training quantisation to an OpenVINO IR.

Both take an iterable of normalised patches: :func:`tuckertrt.inference.calibration.load_calibration` makes them
from a case list of CTs.
"""
from tuckertrt.quantization.int8 import quantize_openvino, quantize_qdq

__all__ = ["quantize_openvino", "quantize_qdq"]
