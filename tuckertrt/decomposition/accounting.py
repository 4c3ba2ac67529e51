"""Parameters and multiply-accumulates of the forward pass, per layer, counted as the paper counted them.

The network runs once on the ``meta`` device (shapes only, no compute), so counting the 1.5 mm network at 128³
takes milliseconds. Conventions (the authors' fvcore counting): one multiply-accumulate = one FLOP; convolutions
(bias not counted) and InstanceNorm (5 per element with affine, as fvcore) counted, activations not; only modules used in the forward pass
count (deep-supervision heads that inference does not run are excluded); batch 1.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tuckertrt.decomposition.layers import CONV_TYPES, TRANSPOSED_TYPES, TuckerConv, channel_axes
from tuckertrt.decomposition.tucker import explained_variance, partial_tucker, reconstruct

NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm3d, nn.GroupNorm)


@dataclass
class ModuleCost:
    name: str
    kind: str
    params: int
    macs: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def _conv_macs(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    spatial = x.shape[2:] if isinstance(m, TRANSPOSED_TYPES) else y.shape[2:]
    return x.shape[0] * m.weight.numel() * math.prod(spatial)


def forward_costs(network: nn.Module, patch: tuple[int, ...], in_channels: int = 1) -> list[ModuleCost]:
    """Cost of each leaf module the forward pass runs, in call order."""
    meta = copy.deepcopy(network).to("meta")
    names = {id(m): n for n, m in meta.named_modules()}
    costs: list[ModuleCost] = []
    seen: set[int] = set()

    def hook(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        x = inputs[0]
        if isinstance(m, CONV_TYPES + TRANSPOSED_TYPES):
            macs = _conv_macs(m, x, output)
        elif isinstance(m, NORM_TYPES):
            macs = output.numel() * (5 if getattr(m, "affine", False) else 4)  # fvcore's norm count
        else:
            macs = 0
        params = sum(p.numel() for p in m.parameters(recurse=False))
        costs.append(ModuleCost(names[id(m)], type(m).__name__, params, macs, tuple(x.shape), tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta.eval()(torch.empty(1, in_channels, *patch, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return costs


@dataclass
class LayerRow:
    """One original conv layer: its cost before and after decomposition."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    ranks: tuple[int, int] | None
    params_original: int
    params: int
    macs_original: int
    macs: int
    explained_variance: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def layer_rows(original: nn.Module, decomposed: nn.Module, patch: tuple[int, ...], in_channels: int = 1,
               with_variance: bool = False) -> list[LayerRow]:
    """Per original conv (used in the forward pass): params/MACs before and after, and optionally the explained
    variance of its kernel at the chosen ranks."""
    before = {c.name: c for c in forward_costs(original, patch, in_channels)}
    after: dict[str, list[ModuleCost]] = {}
    for c in forward_costs(decomposed, patch, in_channels):
        base = c.name.rsplit(".", 1)[0] if c.name.endswith((".project_in", ".core", ".project_out")) else c.name
        after.setdefault(base, []).append(c)
    modules = dict(original.named_modules())
    new_modules = dict(decomposed.named_modules())
    rows = []
    for name, cost in before.items():
        conv = modules[name]
        if not isinstance(conv, CONV_TYPES + TRANSPOSED_TYPES):
            continue
        new = new_modules.get(name)
        ranks = new.ranks if isinstance(new, TuckerConv) else None
        variance = None
        if with_variance and ranks:
            in_axis, out_axis = channel_axes(conv)
            t = partial_tucker(conv.weight, in_axis, out_axis, *ranks)
            variance = explained_variance(conv.weight, reconstruct(t, in_axis, out_axis))
        parts = after.get(name, [])
        rows.append(LayerRow(name, type(conv).__name__, conv.in_channels, conv.out_channels,
                             tuple(conv.kernel_size), ranks, cost.params, sum(p.params for p in parts),
                             cost.macs, sum(p.macs for p in parts), variance))
    return rows


def totals(network: nn.Module, patch: tuple[int, ...], in_channels: int = 1) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of the forward pass."""
    costs = forward_costs(network, patch, in_channels)
    return sum(c.params for c in costs), sum(c.macs for c in costs)


def summarize(original, decomposed, with_variance: bool | None = None) -> dict:
    """The ``stats`` report of two LoadedModels (original and decomposed) at the model's patch."""
    spec = original.spec
    if with_variance is None:
        with_variance = original.trained
    rows = layer_rows(original.network, decomposed.network, spec.patch_size, spec.input_channels, with_variance)
    params0, macs0 = totals(original.network, spec.patch_size, spec.input_channels)
    params, macs = totals(decomposed.network, spec.patch_size, spec.input_channels)
    info = decomposed.decomposition or {}
    return {
        "model": spec.name,
        "patch": list(spec.patch_size),
        "df": info.get("df", 1.0),
        "min_rank": info.get("min_rank"),
        "policy": info.get("policy"),
        "params": params,
        "params_original": params0,
        "gmacs": macs / 1e9,
        "gmacs_original": macs0 / 1e9,
        "compression_ratio": params0 / params,
        "mac_ratio": macs0 / macs,
        "decomposed_layers": len(info.get("ranks", {})),
        "skipped": info.get("skipped", {}),
        "layers": [r.to_json() for r in rows],
    }
