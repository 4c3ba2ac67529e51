"""Rank selection the hardware likes: energy and VBMF ranks, rounding, and latency-aware choice per layer.

Every selector returns an explicit per-layer spec ``{layer: [r_in, r_out] | "keep"}`` that
``decompose(model, ranks=spec)`` accepts; :func:`choose_latency` also returns which layers to fold
(:mod:`tuckertrt.decomposition.fold`). Record both in the manifest so that engines are reproducible.
Latency-aware choice is rank mathematics on measured times: :func:`latency_plan` lists each layer's candidates,
a timer in :mod:`tuckertrt.bench.layer_timing` measures them, :func:`choose_latency` picks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tuckertrt.decomposition.accounting import forward_costs
from tuckertrt.decomposition.fold import fold_layer
from tuckertrt.decomposition.layers import TuckerConv, channel_axes, unsupported_reason
from tuckertrt.decomposition.ranks import RankValue, conv_layers, decomposed_params, rank_for
from tuckertrt.decomposition.tucker import explained_variance, partial_tucker, reconstruct
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.models.loaded import LoadedModel


def round_rank(rank: int, channels: int, multiple: int) -> int:
    """``rank`` rounded up to a multiple of ``multiple`` (SIMD/AMX tile width), never above ``channels``."""
    return min(channels, multiple * math.ceil(rank / multiple))


def _unfolding_spectrum(weight: torch.Tensor, axis: int) -> np.ndarray:
    """Singular values of the mode-``axis`` unfolding, descending."""
    unfolded = torch.movedim(weight.detach().to(torch.float64), axis, 0).reshape(weight.shape[axis], -1)
    return torch.linalg.svdvals(unfolded).numpy()


def energy_rank(singular_values: np.ndarray, energy: float) -> int:
    """Smallest r whose leading singular values keep ``energy`` of the squared sum."""
    power = np.cumsum(singular_values.astype(np.float64) ** 2)
    if power[-1] <= 0:
        return 1
    return int(np.searchsorted(power / power[-1], energy - 1e-12) + 1)


def vbmf_rank(singular_values: np.ndarray, rows: int, cols: int) -> int:
    """Rank by analytical empirical variational Bayesian matrix factorisation (Nakajima et al., 2013).

    The noise variance σ² is the minimiser of the EVB free energy (a 1-D problem given the singular values);
    components whose singular value exceeds the EVB threshold sqrt(M σ² x̄) are kept."""
    from scipy.optimize import minimize_scalar

    short, long_ = sorted((rows, cols))
    alpha = short / long_
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    s2 = np.asarray(singular_values, dtype=np.float64)[:short] ** 2
    if s2.sum() <= 0:
        return 1

    def tau(x: np.ndarray) -> np.ndarray:
        d = x - (1 + alpha)
        return 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))

    def free_energy(log_sigma2: float) -> float:
        x = s2 / (long_ * math.exp(log_sigma2))
        psi = x - np.log(x)
        big = x > x_bar
        t = tau(x[big])
        psi[big] += np.log(t + 1) + alpha * np.log(t / alpha + 1) - t
        return float(psi.sum())

    upper = s2.sum() / (rows * cols)
    best = minimize_scalar(free_energy, bounds=(math.log(upper * 1e-6), math.log(upper)), method="bounded")
    threshold = long_ * math.exp(best.x) * x_bar
    return max(1, int((s2 > threshold).sum()))


def spectral_spec(network: nn.Module, method: str, energy: float = 0.9, min_rank: int = 8,
                  multiple: int | None = None) -> dict[str, RankValue]:
    """Per-layer ranks from each kernel's channel-mode spectra: ``method`` "energy" (keep ``energy`` of the
    squared singular values per mode) or "vbmf"; optionally rounded up to ``multiple``. Layers where the
    decomposition would not reduce parameters are kept."""
    if method not in ("energy", "vbmf"):
        raise UsageError(f"unknown rank method {method!r} (choose energy or vbmf)")
    if method == "energy" and not 0 < energy <= 1:
        raise UsageError(f"--energy must be in (0, 1], got {energy}")
    spec: dict[str, RankValue] = {}
    for name, conv in conv_layers(network).items():
        if unsupported_reason(conv):
            continue
        ranks = []
        for axis, channels in zip(channel_axes(conv), (conv.in_channels, conv.out_channels)):
            values = _unfolding_spectrum(conv.weight, axis)
            r = energy_rank(values, energy) if method == "energy" else \
                vbmf_rank(values, channels, conv.weight.numel() // channels)
            r = min(channels, max(min_rank, r))
            ranks.append(round_rank(r, channels, multiple) if multiple else r)
        original = conv.weight.numel() + (conv.out_channels if conv.bias is not None else 0)
        spec[name] = "keep" if decomposed_params(conv, *ranks) >= original else ranks
    return spec


# --- latency-aware selection -------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One way to run a layer: ``ranks`` None = the original conv; ``fold`` None / "in" / "out"."""

    ranks: tuple[int, int] | None
    fold: str | None = None

    @property
    def label(self) -> str:
        if self.ranks is None:
            return "keep"
        return f"tucker {self.ranks[0]}x{self.ranks[1]}" + (f" fold-{self.fold}" if self.fold else "")

    def module(self, conv: nn.Module) -> nn.Module:
        if self.ranks is None:
            return conv
        layer = TuckerConv.from_conv(conv, *self.ranks)
        return fold_layer(layer, self.fold) if self.fold else layer


def candidates(conv: nn.Module, base: tuple[int, int], multiple: int, folds: bool = True) -> list[Candidate]:
    """The original conv, Tucker-2 at ``base`` ranks and at ranks rounded up to ``multiple``, and their folds."""
    rank_sets = [base]
    rounded = (round_rank(base[0], conv.in_channels, multiple), round_rank(base[1], conv.out_channels, multiple))
    if rounded != base:
        rank_sets.append(rounded)
    out = [Candidate(None)]
    for ranks in rank_sets:
        out.append(Candidate(ranks))
        if folds:
            out += [Candidate(ranks, "in"), Candidate(ranks, "out")]
    return out


@dataclass
class LayerOptions:
    """A layer's real input shape, its plain DF candidate and the candidates allowed by the budget."""

    shape: tuple[int, ...]
    plain: Candidate
    allowed: list[Candidate]
    variance: dict[str, float]


@dataclass
class LatencyPlan:
    """What latency-aware selection measures: every decomposable layer's DF ranks (``spec``) and, for each layer
    the forward pass runs, the candidates within the accuracy budget (``layers``), with the settings used."""

    df: float
    min_rank: int
    multiple: int
    max_param_ratio: float | None
    spec: dict[str, RankValue]
    layers: dict[str, LayerOptions]


def latency_plan(model: LoadedModel, df: float, min_rank: int = 8, multiple: int = 16,
                 max_param_ratio: float | None = None, folds: bool = True) -> LatencyPlan:
    """The candidates to time per layer (see :func:`choose_latency`; the timers are in
    :mod:`tuckertrt.bench.layer_timing`).

    The accuracy budget: a candidate must explain at least the variance of Tucker-2 at the DF ranks (rounding
    up and folding only add; the original conv explains all). ``max_param_ratio`` optionally bounds an
    alternative's parameters relative to the original layer (e.g. 0.5 forbids keeping the original). Layers the
    forward pass does not run (deep-supervision heads) follow the DF rule.
    """
    network = model.network
    shapes = {c.name: c.in_shape for c in forward_costs(network, model.spec.patch_size, model.spec.input_channels)}
    spec: dict[str, RankValue] = {}
    layers: dict[str, LayerOptions] = {}
    for name, conv in conv_layers(network).items():
        if unsupported_reason(conv):
            continue
        base = (rank_for(conv.in_channels, df, min_rank), rank_for(conv.out_channels, df, min_rank))
        spec[name] = list(base)
        if name in shapes:
            layers[name] = _layer_options(conv, shapes[name], base, multiple, folds, max_param_ratio)
    return LatencyPlan(df, min_rank, multiple, max_param_ratio, spec, layers)


def choose_latency(plan: LatencyPlan, seconds: dict[str, dict[str, float]], margin: float = 0.05,
                   log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Per layer, the fastest of ``plan``'s candidates given their measured ``seconds``
    (``{layer: {candidate label: seconds}}``).

    Among the candidates within ``margin`` of the fastest the most accurate wins (so the plain DF decomposition,
    always a candidate, is replaced only by something faster or as fast and more accurate).

    Returns ``{"ranks": spec, "folds": {layer: "in"|"out"}, "layers": {layer: timings}, ...}``.
    """
    spec = dict(plan.spec)
    chosen_folds: dict[str, str] = {}
    report: dict[str, dict[str, Any]] = {}
    for name, opts in plan.layers.items():
        timing = seconds[name]
        plain = opts.plain.label
        pick = _choose(opts, timing, margin)
        spec[name] = "keep" if pick.ranks is None else list(pick.ranks)
        if pick.fold:
            chosen_folds[name] = pick.fold
        report[name] = {"shape": list(opts.shape), "chosen": pick.label,
                        "seconds": {k: round(v, 6) for k, v in timing.items()},
                        "explained_variance": opts.variance}
        keep = f", keep {timing['keep'] * 1e3:.1f} ms" if "keep" in timing else ""
        log(f"  {name}: {pick.label} ({timing[pick.label] * 1e3:.1f} ms; plain {timing[plain] * 1e3:.1f} ms{keep})")
    return {"method": "latency", "df": plan.df, "min_rank": plan.min_rank, "multiple": plan.multiple,
            "margin": margin, "max_param_ratio": plan.max_param_ratio, "ranks": spec, "folds": chosen_folds,
            "layers": report}


def _choose(opts: LayerOptions, timing: dict[str, float], margin: float) -> Candidate:
    """Among the candidates within ``margin`` of the fastest, the most accurate (highest explained variance;
    then the plain DF candidate). Timings closer than ``margin`` are noise under other load: accuracy decides."""
    fastest = min(timing[c.label] for c in opts.allowed)
    near = [c for c in opts.allowed if timing[c.label] <= fastest * (1 + margin)]
    return max(near, key=lambda c: (opts.variance[c.label], c.label == opts.plain.label))


def _layer_options(conv: nn.Module, shape: tuple[int, ...], base: tuple[int, int], multiple: int, folds: bool,
                   max_param_ratio: float | None) -> LayerOptions:
    plain = Candidate(base)
    base_ev = _variance(conv, base)
    original_params = conv.weight.numel() + (conv.out_channels if conv.bias is not None else 0)
    allowed, variance = [], {}
    for cand in candidates(conv, base, multiple, folds):
        ev = 1.0 if cand.ranks is None else _variance(conv, cand.ranks)
        params = original_params if cand.ranks is None else _candidate_params(conv, cand)
        over_budget = max_param_ratio is not None and params > max_param_ratio * original_params
        no_saving = cand.ranks is not None and params >= original_params  # only adds passes: keep is better
        if cand.label != plain.label and (ev + 1e-9 < base_ev or over_budget or no_saving):
            continue
        variance[cand.label] = round(ev, 6)
        allowed.append(cand)
    return LayerOptions(tuple(shape), plain, allowed, variance)


def _candidate_params(conv: nn.Module, cand: Candidate) -> int:
    """Parameters of a decomposed candidate; a fold merges the core with one projection."""
    if cand.fold is None:
        return decomposed_params(conv, *cand.ranks)
    kernel = math.prod(conv.kernel_size)
    r_in, r_out = cand.ranks
    bias = conv.out_channels if conv.bias is not None else 0
    if cand.fold == "in":
        return conv.in_channels * r_out * kernel + r_out * conv.out_channels + bias
    return conv.in_channels * r_in + r_in * conv.out_channels * kernel + bias


def _variance(conv: nn.Module, ranks: tuple[int, int]) -> float:
    in_axis, out_axis = channel_axes(conv)
    return explained_variance(conv.weight, reconstruct(partial_tucker(conv.weight, in_axis, out_axis, *ranks),
                                                       in_axis, out_axis))


def selected_model(model: LoadedModel, selection: dict[str, Any]) -> LoadedModel:
    """Decompose ``model`` with a selection's spec and apply its folds (recorded in ``decomposition``)."""
    from tuckertrt.decomposition import decompose
    from tuckertrt.decomposition.fold import apply_folds

    decomposed = decompose(model, df=None, min_rank=selection.get("min_rank", 8), ranks=selection["ranks"])
    decomposed.decomposition["selection"] = {k: v for k, v in selection.items() if k not in ("ranks", "layers")}
    folds = selection.get("folds") or {}
    if not folds:
        return decomposed
    if any(r not in decomposed.decomposition["ranks"] for r in folds):
        raise TuckerTRTError("a selection folds a layer that it does not decompose")
    return apply_folds(decomposed, folds)
