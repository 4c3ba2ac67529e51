"""The paper's baseline: channel-wise L2-magnitude pruning of every convolution, as masks (it saves no compute).

Per conv, the channels (input channels by default, as the authors' code; output channels optionally) with the
smallest L2 norm over the rest of the kernel are set to zero, a fraction ``amount`` of them, always leaving one
(so the first conv, with one input channel, keeps it). Only convs that the forward pass runs are pruned.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from tuckertrt.decomposition.accounting import forward_costs, totals
from tuckertrt.decomposition.layers import CONV_TYPES, TRANSPOSED_TYPES
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.models.loaded import LoadedModel

CHANNELS = ("in", "out")


def channel_dim(conv: nn.Module, channels: str) -> int:
    """The weight axis of ``channels``: Conv weights are (out, in, k…), ConvTranspose (in, out, k…)."""
    transposed = isinstance(conv, TRANSPOSED_TYPES)
    return {("in", False): 1, ("out", False): 0, ("in", True): 0, ("out", True): 1}[(channels, transposed)]


def channel_mask(weight: torch.Tensor, dim: int, amount: float) -> torch.Tensor:
    """A 0/1 mask of ``weight``'s shape zeroing the ``round(amount · n)`` weakest channels along ``dim``."""
    n = weight.shape[dim]
    n_prune = min(n - 1, round(amount * n))
    norms = weight.detach().transpose(0, dim).reshape(n, -1).norm(dim=1)
    keep = torch.ones(n, dtype=weight.dtype, device=weight.device)
    if n_prune > 0:
        keep[torch.argsort(norms, stable=True)[:n_prune]] = 0
    shape = [1] * weight.dim()
    shape[dim] = n
    return keep.reshape(shape).expand_as(weight).contiguous()


class PruningMasks:
    """The masks of one pruned network; ``apply`` re-zeroes the weights (after each optimizer step)."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    @torch.no_grad()
    def apply(self, network: nn.Module) -> None:
        modules = dict(network.named_modules())
        for name, mask in self.masks.items():
            weight = modules[name].weight
            weight.mul_(mask.to(weight.device))

    @classmethod
    def from_zeros(cls, model: LoadedModel) -> "PruningMasks":
        """Recover the masks of a saved pruned model from its zeroed channels."""
        info = model.extra.get("pruning")
        if not info:
            raise TuckerTRTError(f"{model.name} is not a pruned model")
        modules = dict(model.network.named_modules())
        return cls({name: (modules[name].weight != 0).to(modules[name].weight.dtype) for name in info["layers"]})


def forward_convs(network: nn.Module, model: LoadedModel) -> dict[str, nn.Module]:
    """The convolutions the forward pass runs, by name, in the order it runs them."""
    modules = dict(network.named_modules())
    order = [c.name for c in forward_costs(network, model.spec.patch_size, model.spec.input_channels)]
    return {n: modules[n] for n in order if isinstance(modules[n], CONV_TYPES + TRANSPOSED_TYPES)}


def prune(model: LoadedModel, amount: float, channels: str = "in") -> tuple[LoadedModel, PruningMasks]:
    """A pruned copy of ``model`` (original architecture, zeroed channels) and its masks."""
    if model.is_decomposed:
        raise TuckerTRTError(f"{model.name} is decomposed; prune the original model")
    if model.extra.get("pruning"):
        raise TuckerTRTError(f"{model.name} is already pruned; start from the original model")
    if not 0 <= amount < 1:
        raise UsageError(f"pruning amount must be in [0, 1), got {amount}")
    if channels not in CHANNELS:
        raise UsageError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    network = copy.deepcopy(model.network)
    convs = forward_convs(network, model)
    masks = PruningMasks({name: channel_mask(conv.weight, channel_dim(conv, channels), amount)
                          for name, conv in convs.items()})
    masks.apply(network)
    params = nonzero_params(network, model)
    info: dict[str, Any] = {"amount": amount, "channels": channels, "layers": sorted(masks.masks),
                            "params": params, "params_original": totals(model.network, model.spec.patch_size,
                                                                        model.spec.input_channels)[0]}
    info["compression_ratio"] = info["params_original"] / params
    pruned = copy.copy(model)
    pruned.network = network.eval()
    pruned.extra = {**model.extra, "pruning": info}
    return pruned, masks


def nonzero_params(network: nn.Module, model: LoadedModel) -> int:
    """Parameters of the forward pass, not counting the zeros of conv weights."""
    params, _ = totals(network, model.spec.patch_size, model.spec.input_channels)
    zeros = sum(int((conv.weight == 0).sum()) for conv in forward_convs(network, model).values())
    return params - zeros


def matched_amount(model: LoadedModel, compression_ratio: float, channels: str = "in", tol: float = 1e-3
                   ) -> float:
    """The amount whose pruned model comes closest to ``compression_ratio`` (bisection on the actual count;
    channel counts are integers, so the ratio moves in steps)."""
    def ratio(amount: float) -> float:
        return prune(model, amount, channels)[0].extra["pruning"]["compression_ratio"]

    lo, hi = 0.0, 0.999
    for _ in range(int(math.log2(1 / tol)) + 1):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) < compression_ratio else (lo, mid)
    return min((lo, hi), key=lambda a: abs(math.log(ratio(a) / compression_ratio)))


def amount_matching_tucker(model: LoadedModel, df: float, min_rank: int = 8, channels: str = "in") -> float:
    """The pruning amount with the parameter compression ratio of Tucker at ``df``."""
    from tuckertrt.decomposition import decompose

    tucker = decompose(model, df=df, min_rank=min_rank)
    return matched_amount(model, nonzero_params(model.network, model) / nonzero_params(tucker.network, tucker),
                          channels)
