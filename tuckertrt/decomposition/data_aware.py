"""Data-aware Tucker factors: each layer's factors and core fitted to what the original layer computes on
calibration images, instead of to its kernel alone.

Layers are fitted in forward order. For each one, the input it receives in the *compressed* network so far
(so that every layer corrects the error of those before it) is projected on the ``r_in`` directions that carry
most of the layer's output energy (input covariance Σ weighted by the kernel: leading eigenvectors of
Σ^½ (Σ_k W_kᵀ W_k) Σ^½, whitened), and the core is then found by reduced-rank regression onto the *original*
layer's outputs at sampled positions, each output channel standardised (the InstanceNorm that follows sees them
so): a ridge least-squares fit of the full core, then its ``r_out`` principal output directions. The projection
out carries the standardisation back and the fitted intercept as its bias. All closed form, float64.

Conv layers of any stride/dilation and transposed convs whose kernel equals their stride (nnU-Net's
upsampling) are fitted so; any other layer keeps its weight-only (HOSVD) factors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuckertrt.decomposition.layers import TRANSPOSED_TYPES, TuckerConv

SAMPLES_PER_FEATURE = 12  # sampled output positions per regression feature (capped by what the images have)
RIDGE = 1e-4  # relative to the mean diagonal of the normal equations


@dataclass
class LayerFit:
    """How well one layer's compressed form reproduces the original layer's (standardised) outputs on the
    calibration samples: relative squared error with weight-only factors and with the data-aware fit."""

    name: str
    error_hosvd: float
    error_data: float


class _Stop(Exception):
    pass


def supports_data_fit(conv: nn.Module) -> bool:
    """Whether :func:`fit_network` fits this layer (else it keeps its weight-only factors)."""
    if isinstance(conv, TRANSPOSED_TYPES):
        return (tuple(conv.kernel_size) == tuple(conv.stride) and not any(conv.padding)
                and not any(conv.output_padding) and all(d == 1 for d in conv.dilation))
    return True


@torch.no_grad()
def fit_network(original: nn.Module, compressed: nn.Module, images: torch.Tensor, seed: int = 0,
                max_samples: int = 30_000) -> list[LayerFit]:
    """Refit every :class:`TuckerConv` of ``compressed`` (a decomposed copy of ``original``) in place, in
    forward order, on ``images`` ``(N, C, *patch)``, on the device the images are on (both networks are moved
    there). Returns each fitted layer's error before and after."""
    home = next(original.parameters()).device
    original, compressed = original.eval().to(images.device), compressed.eval().to(images.device)
    try:
        return _fit_in_order(original, compressed, images, seed, max_samples)
    finally:
        original.to(home)  # the caller's model stays where it was


def _fit_in_order(original: nn.Module, compressed: nn.Module, images: torch.Tensor, seed: int,
                  max_samples: int) -> list[LayerFit]:
    layers = {n: m for n, m in compressed.named_modules() if isinstance(m, TuckerConv)}
    originals = dict(original.named_modules())
    fitted = [n for n in _forward_order(compressed, layers, images[:1]) if supports_data_fit(originals[n])]
    rng = np.random.default_rng(seed)
    targets = _sampled_outputs(original, {n: originals[n] for n in fitted},
                               {n: _feature_count(layers[n]) for n in fitted}, images, rng, max_samples)
    report = []
    for name in fitted:
        x = _input_of(compressed, layers[name], images)
        positions, y = targets[name]
        report.append(_fit_layer(name, layers[name], originals[name], x, positions, y))
    return report


def _forward_order(network: nn.Module, layers: dict[str, nn.Module], image: torch.Tensor) -> list[str]:
    order: list[str] = []
    names = {id(m): n for n, m in layers.items()}
    handles = [m.register_forward_pre_hook(lambda mod, args: order.append(names[id(mod)])) for m in layers.values()]
    try:
        network(image)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))


def _sampled_outputs(network: nn.Module, convs: dict[str, nn.Module], features: dict[str, int],
                     images: torch.Tensor, rng: np.random.Generator, max_samples: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For each conv: sampled output positions ``(S, 1 + spatial)`` (batch index first) and the original
    outputs there ``(S, C_out)``, from one pass per image."""
    chosen: dict[str, torch.Tensor] = {}
    values: dict[str, list[torch.Tensor]] = {n: [] for n in convs}
    positions: dict[str, list[torch.Tensor]] = {n: [] for n in convs}

    def hook(name: str, index: int):
        def capture(module: nn.Module, args, output: torch.Tensor) -> None:
            if name not in chosen:
                per_image = min(int(np.prod(output.shape[2:])),
                                max(1, min(max_samples, SAMPLES_PER_FEATURE * features[name]) // len(images)))
                chosen[name] = torch.as_tensor(np.stack([rng.choice(int(np.prod(output.shape[2:])), per_image,
                                                                    replace=False) for _ in images]))
            flat = output[0].reshape(output.shape[1], -1)
            idx = chosen[name][index].to(output.device)
            values[name].append(flat[:, idx].T.double())
            coords = torch.stack(torch.unravel_index(idx, output.shape[2:]), dim=1)
            batch = torch.full((len(idx), 1), index, device=output.device)
            positions[name].append(torch.cat([batch, coords], dim=1))
        return capture

    for i in range(len(images)):
        handles = [m.register_forward_hook(hook(n, i)) for n, m in convs.items()]
        try:
            network(images[i:i + 1])
        finally:
            for h in handles:
                h.remove()
    return {n: (torch.cat(positions[n]), torch.cat(values[n])) for n in convs}


def _feature_count(layer: TuckerConv) -> int:
    """Regression features of the layer's core (and the intercept)."""
    return layer.ranks[0] * int(np.prod(layer.core.kernel_size)) + 1


def _input_of(network: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input ``layer`` receives for each image, stopping each pass there."""
    captured: list[torch.Tensor] = []

    def grab(module: nn.Module, args) -> None:
        captured.append(args[0].detach())
        raise _Stop

    handle = layer.register_forward_pre_hook(grab)
    try:
        for i in range(len(images)):
            try:
                network(images[i:i + 1])
            except _Stop:
                pass
    finally:
        handle.remove()
    return torch.cat(captured)


def _fit_layer(name: str, layer: TuckerConv, conv: nn.Module, x: torch.Tensor, positions: torch.Tensor,
               y: torch.Tensor) -> LayerFit:
    r_in, r_out = layer.ranks
    mean, std, z = _standardised(y, conv)
    before = _relative_error(((_layer_outputs(layer, x, positions) - mean) / std), z)
    directions = _input_directions(x, conv)
    project_in = directions[:r_in]
    coef, fitted = _least_squares(_regression_features(_project(project_in, x), positions, conv), z)
    _, vectors = torch.linalg.eigh(fitted.T @ fitted)
    v = vectors[:, -r_out:].flip(-1)  # (C_out, r_out): the principal directions of what the inputs can explain
    core = coef @ v  # (F, r_out)
    if conv.bias is None:  # no bias to carry an intercept: the fit had none
        core = torch.cat([core, torch.zeros(1, r_out, dtype=core.dtype, device=core.device)])
    _load(layer, conv, project_in, core[:-1], core[-1], v, mean, std)
    after = _relative_error(((_layer_outputs(layer, x, positions) - mean) / std), z)
    return LayerFit(name, before, after)


@torch.no_grad()
def rank_errors(original: nn.Module, images: torch.Tensor, candidates: dict[str, Sequence[tuple[int, int]]],
                seed: int = 0, max_samples: int = 30_000) -> dict[str, dict[tuple[int, int], float]]:
    """Sensitivity of each named conv of ``original`` to decomposition: the relative error of its standardised
    outputs on ``images`` when fitted (as :func:`fit_network` fits) at each candidate (r_in, r_out), on the
    original network's own inputs. One least-squares solve per distinct r_in; every r_out follows from the
    spectrum of the fitted outputs. Runs on the device the images are on."""
    home = next(original.parameters()).device
    try:
        return _rank_errors(original.eval().to(images.device), images, candidates, seed, max_samples)
    finally:
        original.to(home)  # the caller's model stays where it was


def _rank_errors(original: nn.Module, images: torch.Tensor, candidates: dict[str, Sequence[tuple[int, int]]],
                 seed: int, max_samples: int) -> dict[str, dict[tuple[int, int], float]]:
    modules = dict(original.named_modules())
    names = [n for n in candidates if supports_data_fit(modules[n])]
    features = {n: max(r for r, _ in candidates[n]) * int(np.prod(modules[n].kernel_size)) + 1 for n in names}
    targets = _sampled_outputs(original, {n: modules[n] for n in names}, features, images,
                               np.random.default_rng(seed), max_samples)
    errors: dict[str, dict[tuple[int, int], float]] = {}
    for name in names:
        conv = modules[name]
        x = _input_of(original, conv, images)
        positions, y = targets[name]
        _, _, z = _standardised(y, conv)
        total = float((z**2).sum())
        directions = _input_directions(x, conv)
        r_max = max(r for r, _ in candidates[name])
        a = _regression_features(_project(directions[:r_max], x), positions, conv)  # columns (r, k…), then 1
        gram, moment = a.T @ a, a.T @ z
        kernel = (a.shape[1] - (conv.bias is not None)) // r_max
        errors[name] = {}
        for r_in in sorted({r for r, _ in candidates[name]}):  # nested directions: a column subset of ``a``
            keep = torch.cat([torch.arange(r_in * kernel), torch.arange(r_max * kernel, a.shape[1])]).to(a.device)
            coef = _ridge_solve(gram[keep][:, keep], moment[keep])
            fitted = a[:, keep] @ coef
            explained = torch.linalg.eigvalsh(fitted.T @ fitted).flip(0)  # descending
            residual = total - float(explained.sum())
            for r_in_c, r_out in candidates[name]:
                if r_in_c == r_in:
                    errors[name][(r_in, r_out)] = (residual + float(explained[r_out:].sum())) / max(total, 1e-30)
    return errors


def _standardised(y: torch.Tensor, conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean (zero without a bias to carry it) and standard deviation of the original outputs, and
    the outputs standardised by them."""
    mean = y.mean(0) if conv.bias is not None else torch.zeros_like(y[0])
    std = y.std(0).clamp_min(1e-6 * float(y.std(0).max()) + 1e-12)
    return mean, std, (y - mean) / std


def _project(project_in: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("rc,nc...->nr...", project_in, x.double())


def _least_squares(a: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge least squares ``a @ coef ≈ z``: the coefficients and the fitted values."""
    coef = _ridge_solve(a.T @ a, a.T @ z)
    return coef, a @ coef


def _ridge_solve(gram: torch.Tensor, moment: torch.Tensor) -> torch.Tensor:
    ridge = RIDGE * float(gram.diagonal().mean())
    return torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device), moment)


def _input_directions(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``(C_in, C_in)``, most important first (the first ``r_in`` rows project on ``r_in`` channels): whitened
    leading directions of Σ^½ G Σ^½ (Σ the input channels' second moment,
    G = Σ_k W_kᵀ W_k the kernel's input-mode Gram matrix), mapped back through Σ^-½."""
    channels = x.shape[1]
    flat = x.double().movedim(1, 0).reshape(channels, -1)
    sigma = flat @ flat.T / flat.shape[1]
    sigma += 1e-6 * float(sigma.diagonal().mean() or 1.0) * torch.eye(channels, dtype=sigma.dtype,
                                                                      device=sigma.device)
    evals, evecs = torch.linalg.eigh(sigma)
    root = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    inv_root = evecs @ torch.diag(evals.clamp_min(1e-30).rsqrt()) @ evecs.T
    w = conv.weight.double()
    w_in = w.movedim(0, 1) if isinstance(conv, TRANSPOSED_TYPES) else w  # (C_out, C_in, k…)
    unfolded = w_in.movedim(1, 0).reshape(channels, -1)
    gram = unfolded @ unfolded.T
    _, vectors = torch.linalg.eigh(root @ gram @ root)
    return vectors.flip(-1).T @ inv_root


def _regression_features(u: torch.Tensor, positions: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """``(S, F·r + 1)``: what the core's weights multiply at each sampled output position, ordered as the
    core's weight (Conv: (r_in, k…) per output; transposed k = stride: one kernel slot per position), and 1."""
    batch, coords = positions[:, 0], positions[:, 1:]
    r = u.shape[1]
    device = u.device
    if isinstance(conv, TRANSPOSED_TYPES):
        stride = torch.as_tensor(conv.stride, device=device)
        source, slot = coords // stride, coords % stride
        values = u.movedim(1, -1)[(batch, *source.T)]  # (S, r)
        slot_index = torch.zeros_like(batch)
        for axis, size in enumerate(conv.stride):  # row-major index of the kernel slot
            slot_index = slot_index * size + slot[:, axis]
        feats = torch.zeros(len(batch), r, int(np.prod(conv.stride)), dtype=u.dtype, device=device)
        feats[torch.arange(len(batch), device=device), :, slot_index] = values
    else:
        pad = [p for p in reversed(conv.padding) for _ in range(2)]
        padded = F.pad(u, pad)
        kernel = conv.kernel_size
        offsets = np.stack(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij"), -1).reshape(-1, len(kernel))
        stride = torch.as_tensor(conv.stride, device=device)
        dilation = torch.as_tensor(conv.dilation, device=device)
        channels_last = padded.movedim(1, -1)
        feats = torch.stack([channels_last[(batch, *(coords * stride + torch.as_tensor(o, device=device)
                                                     * dilation).T)] for o in offsets], dim=-1)  # (S, r, K)
    feats = feats.reshape(len(batch), -1)
    if conv.bias is None:
        return feats
    return torch.cat([feats, torch.ones(len(batch), 1, dtype=u.dtype, device=device)], dim=1)


def _load(layer: TuckerConv, conv: nn.Module, project_in: torch.Tensor, core: torch.Tensor,
          intercept: torch.Tensor, v: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
    dtype = layer.core.weight.dtype
    spatial = (1,) * (conv.weight.dim() - 2)
    r_in, r_out = layer.ranks
    kernel = tuple(conv.kernel_size)
    core = core.T.reshape(r_out, r_in, *kernel)  # (r_out, r_in, k…), the Conv layout
    if isinstance(conv, TRANSPOSED_TYPES):
        core = core.movedim(0, 1)  # ConvTranspose keeps (in, out, k…)
    project_out = std[:, None] * v  # (C_out, r_out)
    layer.project_in.weight.copy_(project_in.reshape(r_in, -1, *spatial).to(dtype))
    layer.core.weight.copy_(core.to(dtype))
    layer.project_out.weight.copy_(project_out.reshape(*project_out.shape, *spatial).to(dtype))
    if layer.project_out.bias is not None:
        layer.project_out.bias.copy_((mean + project_out @ intercept).to(dtype))


def _layer_outputs(layer: nn.Module, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    out = layer(x)
    return out.movedim(1, -1)[(positions[:, 0], *positions[:, 1:].T)].double()


def _relative_error(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(((prediction - target) ** 2).sum() / (target**2).sum().clamp_min(1e-30))
