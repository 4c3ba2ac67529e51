"""Exact rewrites of decomposed layers: fold a 1×1×1 projection into the core convolution.

``fold="in"``: ``project_in`` ∘ ``core`` becomes one convolution C_in→r_out with the original kernel
(weight = core ×_in U_inᵀ), followed by ``project_out``. ``fold="out"``: ``core`` ∘ ``project_out`` becomes one
convolution r_in→C_out with the original bias (weight = core ×_out U_out), after ``project_in``. Both are exact
(linear maps compose; zero padding of a bias-free 1×1 projection stays zero): fewer full-resolution memory passes
for more multiply-accumulates, worthwhile only where a runtime says so (see :mod:`select`).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tuckertrt.decomposition.apply import replace_module
from tuckertrt.decomposition.layers import TRANSPOSED_TYPES, TuckerConv, channel_axes
from tuckertrt.decomposition.tucker import mode_product
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.loaded import LoadedModel

FOLDS = ("in", "out")


def _pointwise_matrix(conv: nn.Module) -> torch.Tensor:
    """A 1×1 conv's weight as a (C_out, C_in) matrix."""
    return conv.weight.detach().reshape(conv.weight.shape[0], conv.weight.shape[1])


def _conv_like(core: nn.Module, in_channels: int, out_channels: int, bias: bool) -> nn.Module:
    kwargs: dict[str, Any] = dict(kernel_size=core.kernel_size, stride=core.stride, padding=core.padding,
                                  dilation=core.dilation, bias=bias, device=core.weight.device,
                                  dtype=core.weight.dtype)
    if isinstance(core, TRANSPOSED_TYPES):
        kwargs["output_padding"] = core.output_padding
    return type(core)(in_channels, out_channels, **kwargs)


@torch.no_grad()
def fold_layer(layer: TuckerConv, fold: str) -> nn.Sequential:
    """The two-convolution equivalent of ``layer`` with ``project_in`` (fold "in") or ``project_out`` (fold
    "out") merged into the core."""
    core = layer.core
    in_axis, out_axis = channel_axes(core)
    weight = core.weight.detach().to(torch.float64)
    if fold == "in":
        u_in = _pointwise_matrix(layer.project_in).to(torch.float64)  # (r_in, C_in)
        merged = _conv_like(core, layer.project_in.in_channels, core.out_channels, bias=False)
        merged.weight.copy_(mode_product(weight, u_in.T, in_axis).to(core.weight.dtype))
        return nn.Sequential(merged, layer.project_out)
    if fold == "out":
        u_out = _pointwise_matrix(layer.project_out).to(torch.float64)  # (C_out, r_out)
        out = layer.project_out
        merged = _conv_like(core, core.in_channels, out.out_channels, bias=out.bias is not None)
        merged.weight.copy_(mode_product(weight, u_out, out_axis).to(core.weight.dtype))
        if out.bias is not None:
            merged.bias.copy_(out.bias)
        return nn.Sequential(layer.project_in, merged)
    raise TuckerTRTError(f"unknown fold {fold!r} (choose from {', '.join(FOLDS)})")


def fold_network(network: nn.Module, folds: dict[str, str]) -> nn.Module:
    """A copy of ``network`` with each named :class:`TuckerConv` folded as ``folds`` says."""
    network = copy.deepcopy(network)
    modules = dict(network.named_modules())
    for name, fold in folds.items():
        layer = modules.get(name)
        if not isinstance(layer, TuckerConv):
            raise TuckerTRTError(f"cannot fold {name}: not a decomposed layer")
        replace_module(network, layer, fold_layer(layer, fold))
    return network.eval()


def apply_folds(model: LoadedModel, folds: dict[str, str]) -> LoadedModel:
    """A copy of a decomposed ``model`` with folded layers, the folds recorded in ``decomposition["folds"]``.

    Folded models are for export/deployment; save the unfolded model (folding is cheap and exact)."""
    if not model.is_decomposed:
        raise TuckerTRTError(f"{model.name} is not decomposed: nothing to fold")
    info = {**model.decomposition, "folds": dict(folds)}
    return LoadedModel(spec=model.spec, network=fold_network(model.network, folds), architecture=model.architecture,
                       plans=model.plans, dataset=model.dataset, config_name=model.config_name, source=model.source,
                       checkpoint_sha256=model.checkpoint_sha256, trained=model.trained, decomposition=info,
                       extra=dict(model.extra))
