"""Layer-wise initialisation of a decomposed student: each TuckerConv is fitted by least squares to its
original layer's outputs on distillation crops (the original's own inputs to that layer), before end-to-end
distillation. Solved with L-BFGS on the cached activations, which handles Conv and ConvTranspose alike."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from tuckertrt.decomposition.layers import TuckerConv
from tuckertrt.training.sampling import PatchSampler, Volume


def layer_inputs(network: nn.Module, names: Sequence[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of each named module during one forward pass of ``images``."""
    modules = dict(network.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_pre_hook(
        lambda m, args, n=n: captured.setdefault(n, args[0].detach().clone())) for n in names]
    try:
        with torch.no_grad():
            network.eval()(images)
    finally:
        for h in handles:
            h.remove()
    return captured


def fit_layer(layer: TuckerConv, original: nn.Module, inputs: torch.Tensor, steps: int = 20) -> tuple[float, float]:
    """Minimise ‖layer(x) − original(x)‖² over the layer's weights; returns the relative error before/after."""
    with torch.no_grad():
        target = original(inputs)
        scale = float((target**2).mean()) or 1.0
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((layer(inputs) - target) ** 2).mean() / scale
        loss.backward()
        return loss

    before = float(closure().detach())
    optimizer.step(closure)
    with torch.no_grad():
        after = float(((layer(inputs) - target) ** 2).mean() / scale)
    return before, after


def fit_layers(teacher: nn.Module, student: nn.Module, volumes: Sequence[Volume], patch: Sequence[int],
               seed: int, device: str, crops: int = 2, steps: int = 20) -> dict[str, tuple[float, float]]:
    """Fit every TuckerConv of ``student`` to the same-named conv of ``teacher`` on ``crops`` sampled patches."""
    sampler = PatchSampler(volumes, patch, crops)
    images = sampler.sample(np.random.default_rng(seed + 1)).image.to(device)
    teacher, student = teacher.to(device), student.to(device)
    layers = {n: m for n, m in student.named_modules() if isinstance(m, TuckerConv)}
    originals = dict(teacher.named_modules())
    inputs = layer_inputs(teacher, list(layers), images)
    return {name: fit_layer(layer, originals[name], inputs[name], steps) for name, layer in layers.items()
            if name in inputs}
