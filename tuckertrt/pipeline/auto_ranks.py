"""``--ranks auto``: per-layer ranks chosen for the least predicted quality loss under a budget of
multiply-accumulates (``--macs F``: a fraction of the original's) or of measured speed (``--speedup S``: the
compressed network, as the CPU backends deploy it on OpenVINO, at most 1/S of the original's latency).

Sensitivity is measured on calibration images (each layer fitted alone at every candidate rank,
:func:`~tuckertrt.decomposition.data_aware.rank_errors`); costs are each option's multiply-accumulates; the
speed budget is met by tightening the MAC budget until the measured latency ratio reaches the target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.accounting import forward_costs, totals
from tuckertrt.decomposition.allocate import (Allocation, Option, allocate, candidate_ranks, conv_macs,
                                              tucker_macs)
from tuckertrt.decomposition.data_aware import rank_errors
from tuckertrt.decomposition.layers import unsupported_reason
from tuckertrt.decomposition.ranks import conv_layers
from tuckertrt.errors import UsageError
from tuckertrt.models.loaded import LoadedModel

MAX_SPEED_ROUNDS = 4


@dataclass
class AutoRanks:
    """The chosen ranks, what they were chosen for, and what was measured."""

    allocation: Allocation
    target: dict[str, float]
    macs_total: int  # the whole original network's multiply-accumulates per patch
    macs_fixed: int  # of which the layers that are not candidates (norms, kept convs)
    rounds: list[dict[str, float]] = field(default_factory=list)  # MAC fraction → measured speedup

    @property
    def mac_fraction(self) -> float:
        """The compressed network's multiply-accumulates over the original's (whole network)."""
        return (self.macs_fixed + self.allocation.macs) / self.macs_total

    @property
    def met(self) -> bool:
        """Whether the target was reached (a MAC budget always is, unless even the cheapest ranks exceed it)."""
        if "speedup" in self.target:
            return bool(self.rounds) and self.rounds[-1]["speedup"] >= self.target["speedup"]
        return self.mac_fraction <= self.target["macs"] + 1e-9

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "met": self.met, "mac_fraction": round(self.mac_fraction, 4),
                "predicted_error": round(self.allocation.predicted_error, 4), "rounds": self.rounds,
                "ranks": self.allocation.rank_spec()}


def layer_options(model: LoadedModel, images: torch.Tensor, min_rank: int = 8) -> dict[str, list[Option]]:
    """Every decomposable conv's options (keep, and candidate ranks) with their MACs and predicted errors."""
    layers = conv_layers(model.network)
    decomposable = [name for name, conv in layers.items() if unsupported_reason(conv) is None]
    shapes = {c.name: (c.in_shape, c.out_shape)
              for c in forward_costs(model.network, model.spec.patch_size, model.spec.input_channels)}
    candidates = {name: candidate_ranks(layers[name], min_rank) for name in decomposable if name in shapes}
    errors = rank_errors(model.network, images, {n: c for n, c in candidates.items() if c})
    options: dict[str, list[Option]] = {}
    for name, pairs in candidates.items():
        conv = layers[name]
        p_in, p_out = (_positions(s) for s in shapes[name])
        options[name] = [Option(None, conv_macs(conv, p_in, p_out), 0.0)] + [
            Option(pair, tucker_macs(conv, *pair, p_in, p_out), errors[name][pair])
            for pair in pairs if pair in errors.get(name, {})]
    return options


def auto_ranks(model: LoadedModel, images: torch.Tensor, *, macs: float | None = None,
               speedup: float | None = None, min_rank: int = 8,
               measure: Callable[[LoadedModel, LoadedModel], float] | None = None) -> AutoRanks:
    """Ranks for ``model`` under a MAC fraction or a measured speedup (``measure(original, compressed)``
    returns the speedup; default: OpenVINO bf16 in the deployed form on this machine)."""
    if (macs is None) == (speedup is None):
        raise UsageError("--ranks auto needs exactly one of --macs F or --speedup S")
    if macs is not None and not 0 < macs <= 1:
        raise UsageError(f"--macs must be in (0, 1], got {macs}")
    if speedup is not None and not speedup >= 1:
        raise UsageError(f"--speedup must be at least 1, got {speedup}")
    options = layer_options(model, images, min_rank)
    _, total = totals(model.network, model.spec.patch_size, model.spec.input_channels)
    fixed = total - sum(next(o for o in opts if o.ranks is None).macs for opts in options.values())

    def allocation_at(fraction: float) -> Allocation:
        return allocate(options, int(fraction * total - fixed))

    if macs is not None:
        return AutoRanks(allocation_at(macs), {"macs": macs}, total, fixed)
    measure = measure or openvino_speedup
    fraction, rounds = 1 / speedup, []
    chosen = allocation_at(fraction)
    for _ in range(MAX_SPEED_ROUNDS):
        measured = measure(model, decompose(model, ranks=chosen.rank_spec(), min_rank=min_rank))
        rounds.append({"mac_fraction": round((fixed + chosen.macs) / total, 4), "speedup": round(measured, 3)})
        if measured >= speedup:
            break
        fraction *= measured / speedup
        tighter = allocation_at(fraction)
        if tighter.layers == chosen.layers:  # already the cheapest allocation the candidates allow
            break
        chosen = tighter
    return AutoRanks(chosen, {"speedup": speedup}, total, fixed, rounds)


def openvino_speedup(original: LoadedModel, compressed: LoadedModel, precision: str = "bf16") -> float:
    """Latency of ``original`` over ``compressed``, both as the CPU backends deploy them, on OpenVINO."""
    from tuckertrt.bench.layer_timing import deployed_openvino_seconds

    spec = original.spec
    shape = (1, spec.input_channels, *spec.patch_size)
    probe = tuple(min(p, 32) for p in spec.patch_size)
    base, fast = deployed_openvino_seconds([original.network, compressed.network], shape, probe, precision)
    return base / fast


def _positions(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape[2:]:
        n *= s
    return n
