"""The model variants a benchmark compares: the uncompressed network and decomposed copies, each as ONNX."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.accounting import totals
from tuckertrt.models.loaded import LoadedModel


@dataclass
class Variant:
    """One network to time: ``key`` names it in tables ("DF 1", "DF 0.3", "DF 0.3 latency", ...)."""

    key: str
    df: float
    model: LoadedModel
    onnx: Path | None = None

    @property
    def compressed(self) -> bool:
        return self.model.is_decomposed

    def facts(self) -> dict[str, Any]:
        params, macs = totals(self.model.network, self.model.spec.patch_size, self.model.spec.input_channels)
        info = self.model.decomposition or {}
        return {"key": self.key, "df": self.df, "params": params, "gmacs": round(macs / 1e9, 3),
                "decomposed_layers": len(info.get("ranks", {})), "kept_layers": len(info.get("skipped", {})),
                "onnx": str(self.onnx) if self.onnx else None}


def df_variants(model: LoadedModel, dfs: list[float], min_rank: int = 8, policy: str = "default") -> list[Variant]:
    """DF 1 is the uncompressed model itself; every other DF a decomposed copy."""
    return [Variant("DF 1", 1.0, model) if df >= 1 else
            Variant(f"DF {df:g}", df, decompose(model, df=df, min_rank=min_rank, policy=policy))
            for df in dfs]


def export_onnx(model: LoadedModel, path: Path) -> Path:
    """The network as static-shape FP32 ONNX (opset 17, input ``input``, output ``logits``), written atomically."""
    from tuckertrt.fileio import atomic_path

    shape = (1, model.spec.input_channels, *model.spec.patch_size)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(model.network, torch.zeros(shape), str(tmp), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    return path
