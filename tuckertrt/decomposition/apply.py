"""Replace the convolutions of a network with Tucker-2 layers."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from tuckertrt.decomposition.data_aware import fit_network
from tuckertrt.decomposition.layers import TuckerConv
from tuckertrt.decomposition.ranks import RankValue, plan_ranks
from tuckertrt.models.loaded import LoadedModel


def replace_module(network: nn.Module, old: nn.Module, new: nn.Module) -> int:
    """Put ``new`` wherever ``old`` is registered (a module may have several parents/names); return the count."""
    count = 0
    for parent in network.modules():
        for key, child in parent._modules.items():
            if child is old:
                parent._modules[key] = new
                count += 1
    return count


def decompose_network(network: nn.Module, chosen: dict[str, tuple[int, int]], hooi_iters: int = 0,
                      init: bool = True) -> None:
    """In place: each named conv in ``chosen`` becomes a :class:`TuckerConv` at its ranks.

    ``init=False`` builds the structure only (weights to be loaded from a state dict).
    """
    modules = dict(network.named_modules())
    for name, (r_in, r_out) in chosen.items():
        conv = modules[name]
        layer = (TuckerConv.from_conv(conv, r_in, r_out, hooi_iters) if init
                 else TuckerConv.empty_like(conv, r_in, r_out))
        replace_module(network, conv, layer)


def decompose(model: LoadedModel, df: float | None = None, min_rank: int = 8, policy: str = "default",
              ranks: dict[str, RankValue] | None = None, hooi_iters: int = 0,
              calibration: torch.Tensor | None = None) -> LoadedModel:
    """A decomposed copy of ``model``; ``model`` itself is left untouched.

    Factors come from the weights (HOSVD, optionally refined by HOOI: the paper's method), or, with
    ``calibration`` images ``(N, C, *patch)``, are fitted to the original layers' outputs on them
    (:mod:`~tuckertrt.decomposition.data_aware`)."""
    if model.is_decomposed:
        from tuckertrt.errors import TuckerTRTError

        raise TuckerTRTError(f"{model.name} is already decomposed; start from the original model")
    start = time.perf_counter()
    chosen, skipped = plan_ranks(model.network, df, min_rank, policy, ranks)
    network = copy.deepcopy(model.network)
    decompose_network(network, chosen, hooi_iters)
    fits = fit_network(model.network, network, calibration) if calibration is not None else None
    network.cpu()  # fitted where the calibration images are; a LoadedModel's network lives on the CPU
    info: dict[str, Any] = {
        "df": df, "min_rank": min_rank, "policy": policy, "hooi_iters": hooi_iters,
        "ranks": {k: list(v) for k, v in chosen.items()}, "skipped": skipped,
        "init": "data" if fits is not None else "hosvd",
        "calibration_images": len(calibration) if calibration is not None else 0,
        "layer_fits": [asdict(f) for f in fits] if fits is not None else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return LoadedModel(spec=model.spec, network=network.eval(), architecture=model.architecture,
                       plans=model.plans, dataset=model.dataset, config_name=model.config_name,
                       source=model.source, checkpoint_sha256=model.checkpoint_sha256, trained=model.trained,
                       decomposition=info, extra=dict(model.extra))
