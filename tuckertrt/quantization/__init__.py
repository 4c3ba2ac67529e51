"""Post-training static INT8 quantisation with calibration on real CT patches.

* :func:`quantize_qdq` — explicit Q/DQ ONNX (ONNX Runtime's static quantisation, symmetric int8 activations and
  per-channel weights: runs on ONNX Runtime and is what TensorRT's explicit quantisation expects).
* :func:`quantize_openvino` — NNCF post-training quantisation to an OpenVINO IR.
"""
from tuckertrt.quantization.calibration import CalibrationSet, load_calibration
from tuckertrt.quantization.int8 import quantize_openvino, quantize_qdq

__all__ = ["CalibrationSet", "load_calibration", "quantize_openvino", "quantize_qdq"]
