"""Engine file names that say what an engine is and where it runs.

``{model}_df{DF}_{fp32|fp16}_sm{CC[-CC...]}_{trt|trtrtx}{major.minor}[_ampere+][_vc].engine``
"""
from __future__ import annotations

import re

ENGINE_SUFFIX = ".engine"


def df_text(df: float | None) -> str:
    """0.3 -> "0.3", 1 -> "1.0"; an unknown DF (an ONNX without an export manifest) -> "NA"."""
    return "NA" if df is None else str(float(df))


def engine_filename(model: str, df: float | None, precision: str, sms: list[int], tag: str,
                    version: tuple[int, int], hardware_compat: str | None = None,
                    version_compatible: bool = False) -> str:
    safe_model = re.sub(r"[^A-Za-z0-9.+-]+", "-", model).strip("-") or "model"
    parts = [safe_model, f"df{df_text(df)}", precision, "sm" + "-".join(str(sm) for sm in sms),
             f"{tag}{version[0]}.{version[1]}"]
    if hardware_compat:
        parts.append(hardware_compat)
    if version_compatible:
        parts.append("vc")
    return "_".join(parts) + ENGINE_SUFFIX
