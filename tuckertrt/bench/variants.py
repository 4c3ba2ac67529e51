"""The model variants a benchmark compares: the uncompressed network and decomposed copies, each as ONNX."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tuckertrt.decomposition import decompose, load_model
from tuckertrt.decomposition.accounting import totals
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.bench.auto_backend import CachedChoice
from tuckertrt.models.loaded import LoadedModel


@dataclass
class Variant:
    """One network to time: ``key`` names it in tables ("DF 1", "DF 0.3", "DF 0.3 latency", ...)."""

    key: str
    df: float
    model: LoadedModel
    onnx: Path | None = None
    auto: CachedChoice | None = None  # with --backend auto: the runtime and cache entry segment would use

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


def checkpoint_variants(model: LoadedModel, paths: Sequence[str | Path]) -> list[Variant]:
    """Compressed checkpoints of ``model`` (``tuckertrt finetune`` outputs), keyed by DF and how they were
    recovered ("DF 0.3 distilled", "DF 0.3 fine-tuned")."""
    from tuckertrt.training.recovery import check_pair

    out: list[Variant] = []
    for path in paths:
        loaded = load_model(str(path))
        if not loaded.is_decomposed:
            raise UsageError(f"--variant {path}: not a decomposed model")
        try:
            check_pair(model, loaded)
        except TuckerTRTError as e:
            raise UsageError(f"--variant {path}: not a compressed {model.name} ({e})") from None
        df = float(loaded.decomposition.get("df") or 0)
        mode = (loaded.extra.get("recovery") or {}).get("mode", "")
        stage = "distilled" if "distill" in mode else "fine-tuned" if mode else Path(path).stem
        key, n = f"DF {df:g} {stage}", 1
        while key in {v.key for v in out}:  # two checkpoints of one DF and stage
            n += 1
            key = f"DF {df:g} {stage} ({n})"
        out.append(Variant(key, df, loaded))
    return out


def latency_variants(model: LoadedModel, dfs: list[float], backend: str, precision: str, threads: int | None,
                     min_rank: int = 8, log=print) -> list[Variant]:
    """Per DF < 1: ranks/folds chosen per layer by timing candidates on ``backend`` (see ``select_latency``):
    inside the whole network on OpenVINO, in isolation on ONNX Runtime."""
    from tuckertrt.bench.layer_timing import (deployed_openvino_seconds, in_graph_openvino, isolated,
                                              onnxruntime_timer, select_latency)
    from tuckertrt.decomposition.select import selected_model

    shape = (1, model.spec.input_channels, *model.spec.patch_size)
    probe = tuple(2 * d for d in model.spec.downsampling)
    measure = in_graph_openvino(shape, probe, precision, threads) if backend == "openvino" else \
        isolated(onnxruntime_timer(threads))
    out = []
    for df in (d for d in dfs if d < 1):
        log(f"latency-aware selection at DF {df:g} on {backend} {precision}")
        selection = select_latency(model, measure, df, min_rank, log=log)
        chosen = selected_model(model, selection)
        if backend == "openvino":  # layers are timed one by one; the whole deployed network has the last word
            plain = decompose(model, df=df, min_rank=min_rank)
            plain_s, chosen_s = (round(t, 6) for t in deployed_openvino_seconds(
                [plain.network, chosen.network], shape, probe, precision, threads))  # decided as recorded
            selection["whole_network_seconds"] = {"plain": plain_s, "selected": chosen_s}
            if chosen_s > plain_s:
                log(f"  the selection runs slower than plain DF {df:g} as deployed ({chosen_s:.3f} s vs "
                    f"{plain_s:.3f} s): keeping the plain DF ranks")
                selection.update(ranks=plain.decomposition["ranks"], folds={}, fallback="plain DF is faster")
                chosen = plain
        chosen.extra["selection"] = selection
        out.append(Variant(f"DF {df:g} latency", df, chosen))
    return out


def export_variant(variant: Variant, root: Path) -> Path:
    """Export ``variant`` (FP32 ONNX, simplified, with manifest) into ``root/<key>``; the rank selection and
    folds, if any, are recorded in the manifest's ``reports``. Returns the export directory."""
    from tuckertrt.parity.export import export_model
    from tuckertrt.graph.manifest import update_manifest

    out = root / variant.key.replace(" ", "_")
    export_model(variant.model, out, fp16=False, verify=False)
    selection = variant.model.extra.get("selection")
    if selection is not None:
        update_manifest(out, "reports", "rank_selection", selection)
    variant.onnx = out
    return out
