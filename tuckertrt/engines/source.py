"""Which ONNX file an engine is built from, at which precision, and what the export manifest says about it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from tuckertrt.errors import TuckerTRTError
from tuckertrt.graph.manifest import MANIFEST_NAME, load_manifest

ONNX_NAMES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}


@dataclass(frozen=True)
class OnnxSource:
    """The ONNX an engine is built from. ``model``/``df`` come from the export manifest when there is one."""

    path: Path
    precision: str
    model: str
    df: float | None
    manifest: dict[str, Any] | None
    converted_from: Path | None = None  # the FP32 ONNX when ``path`` is an FP16 conversion made for this build


def onnx_precision(path: Path) -> str:
    """"fp16" when the graph's weights are stored in FP16 (an FP16 export), else "fp32"."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, ... on a broken file
        raise TuckerTRTError(f"{path} is not a readable ONNX model: {type(e).__name__}") from None
    types = {init.data_type for init in model.graph.initializer}
    return "fp16" if onnx.TensorProto.FLOAT16 in types else "fp32"


def _manifest_for(path: Path) -> dict[str, Any] | None:
    return load_manifest(path.parent) if (path.parent / MANIFEST_NAME).is_file() else None


def _model_facts(manifest: dict[str, Any] | None, path: Path) -> tuple[str, float | None]:
    """(model name, DF): from the manifest; without one, the file name and an unknown DF."""
    if manifest is None:
        stem = re.sub(r"_fp(16|32)$", "", path.stem)
        return (path.parent.name if stem == "model" else stem), None
    model = manifest.get("model") or {}
    df = model.get("df")
    return str(model.get("name") or path.parent.name), (1.0 if df is None else float(df))


def _fp16_conversion(fp32: Path, scratch: Path) -> Path:
    """Convert ``fp32`` with the export code's FP16 converter (InstanceNormalization stays FP32)."""
    try:
        from tuckertrt.graph.fp16 import to_fp16
    except ImportError:
        raise TuckerTRTError(f"{fp32} is an FP32 ONNX and no FP16 converter is available: "
                             "export with --fp16 and build from the export directory") from None
    out = scratch / f"{fp32.stem}_fp16.onnx"
    onnx.save(to_fp16(onnx.load(str(fp32))), str(out))
    return out


def resolve_source(onnx_or_dir: str | Path, fp16: bool, scratch: Path) -> OnnxSource:
    """The ONNX to build: an export directory's ``model.onnx`` / ``model_fp16.onnx``, or a single ONNX file
    (an FP32 file with ``fp16`` is converted into ``scratch``; an FP16 file is built as FP16)."""
    given = Path(onnx_or_dir)
    want = "fp16" if fp16 else "fp32"
    if given.is_dir():
        path = given / ONNX_NAMES[want]
        fallback = given / ONNX_NAMES["fp32"]
        if not path.is_file() and not (fp16 and fallback.is_file()):
            raise TuckerTRTError(f"{given} has no {path.name}: export it first (tuckertrt export)")
        if not path.is_file():
            path = fallback
    elif given.is_file():
        path = given
    else:
        raise TuckerTRTError(f"ONNX file or export directory not found: {given}")
    manifest = _manifest_for(path)
    model, df = _model_facts(manifest, path)
    found = onnx_precision(path)
    if fp16 and found == "fp32":
        return OnnxSource(_fp16_conversion(path, scratch), "fp16", model, df, manifest, converted_from=path)
    return OnnxSource(path, found, model, df, manifest)  # an FP16 file builds an FP16 engine, --fp16 or not
