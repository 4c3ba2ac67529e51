"""INT8 post-training static quantisation of an FP32 ONNX model, calibrated on CT patches."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from tuckertrt.errors import MissingDependencyError, TuckerTRTError
from tuckertrt.fileio import atomic_path

QUANTIZED_OPS = ("Conv", "ConvTranspose")


def quantize_qdq(onnx_in: str | Path, onnx_out: str | Path, patches: Iterable[np.ndarray],
                 per_channel: bool = True) -> Path:
    """Explicit Q/DQ ONNX via ONNX Runtime static quantisation (MinMax calibration over ``patches``).

    Only convolutions are quantised (InstanceNorm, activations and concatenations stay float). Activations and
    weights are symmetric int8 (zero point 0), weights per output channel: the form TensorRT's explicit
    quantisation consumes, and ONNX Runtime / OpenVINO run it as well."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(patches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            patch = next(self.items, None)
            return None if patch is None else {"input": np.ascontiguousarray(patch, dtype=np.float32)}

    onnx_out = Path(onnx_out)
    with atomic_path(onnx_out) as tmp:
        try:
            quantize_static(str(onnx_in), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                            op_types_to_quantize=list(QUANTIZED_OPS),
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        except (ValueError, RuntimeError) as e:
            raise TuckerTRTError(f"INT8 quantisation of {onnx_in} failed: {str(e).splitlines()[0]}") from None
    return onnx_out


def quantize_openvino(onnx_in: str | Path, xml_out: str | Path, patches: Iterable[np.ndarray]) -> Path:
    """NNCF post-training quantisation (performance preset) to an OpenVINO IR (``.xml`` + ``.bin``)."""
    if importlib.util.find_spec("nncf") is None:
        raise MissingDependencyError("nncf", purpose="OpenVINO INT8 quantisation")
    import nncf
    import openvino as ov

    data = [np.ascontiguousarray(p, dtype=np.float32) for p in patches]
    if not data:
        raise TuckerTRTError("no calibration patches")
    model = ov.Core().read_model(str(onnx_in))
    quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data))
    xml_out = Path(xml_out)
    if xml_out.suffix != ".xml":
        raise TuckerTRTError(f"OpenVINO IR output must end in .xml, got {xml_out.name}")
    xml_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml_out.parent, prefix=f".{xml_out.stem}.") as tmp:
        staged = Path(tmp) / xml_out.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml_out.with_suffix(".bin"))
        os.replace(staged, xml_out)  # the .xml last: a model is complete once its .xml exists
    return xml_out
