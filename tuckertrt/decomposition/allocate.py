"""Quality-aware rank allocation: per layer, the option (keep the conv, or Tucker ranks) that minimises the
predicted quality loss for a given total cost.

Each layer has options with a cost (multiply-accumulates of the forward pass at the model's patch, the latency
model used here) and a predicted error (:func:`tuckertrt.decomposition.data_aware.rank_errors`: the relative
error of the layer's standardised outputs on calibration images). The allocation minimises Σ error subject to
Σ cost ≤ budget by a Lagrangian sweep: for a price λ every layer independently takes argmin(error + λ·cost);
λ is bisected to the cheapest price that fits the budget. This is exact on the lower convex hull of each layer's
options, which is where a greedy or knapsack solution would land too at these sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from torch import nn

from tuckertrt.decomposition.layers import TRANSPOSED_TYPES
from tuckertrt.decomposition.ranks import RankValue

RANK_FRACTIONS = (0.75, 0.5, 0.375, 0.25, 0.125)
RANK_MULTIPLE = 8  # hardware-friendly ranks (AMX/AVX-512 tiles, tensor cores)


@dataclass(frozen=True)
class Option:
    """One choice for one layer: ``ranks`` None keeps the original conv."""

    ranks: tuple[int, int] | None
    macs: int
    error: float


@dataclass
class Allocation:
    """Chosen option per layer, with the totals over those layers."""

    layers: dict[str, Option]
    macs: int
    macs_original: int
    predicted_error: float

    def rank_spec(self) -> dict[str, RankValue]:
        """As a ``--ranks`` JSON: ``[r_in, r_out]`` or ``"keep"`` per layer."""
        return {name: list(o.ranks) if o.ranks else "keep" for name, o in self.layers.items()}


def candidate_ranks(conv: nn.Module, min_rank: int = 8,
                    fractions: Sequence[float] = RANK_FRACTIONS) -> list[tuple[int, int]]:
    """(r_in, r_out) pairs on a grid of channel fractions, rounded up to multiples of 8 (at least ``min_rank``,
    at most the channel count), that save multiply-accumulates over the original conv."""
    def ranks(channels: int) -> list[int]:
        return sorted({min(channels, max(min_rank, RANK_MULTIPLE * math.ceil(f * channels / RANK_MULTIPLE)))
                       for f in fractions})

    pairs = [(r_in, r_out) for r_in in ranks(conv.in_channels) for r_out in ranks(conv.out_channels)]
    return [p for p in pairs if tucker_macs(conv, *p, 1, 1) < conv_macs(conv, 1, 1)]


def conv_macs(conv: nn.Module, positions_in: int, positions_out: int) -> int:
    """The original conv's multiply-accumulates (a transposed conv counted at its input positions)."""
    positions = positions_in if isinstance(conv, TRANSPOSED_TYPES) else positions_out
    return positions * conv.weight.numel()


def tucker_macs(conv: nn.Module, r_in: int, r_out: int, positions_in: int, positions_out: int) -> int:
    """Multiply-accumulates of the three-conv form at ranks (r_in, r_out)."""
    kernel = math.prod(conv.kernel_size)
    core_positions = positions_in if isinstance(conv, TRANSPOSED_TYPES) else positions_out
    return (positions_in * conv.in_channels * r_in + core_positions * r_in * r_out * kernel
            + positions_out * r_out * conv.out_channels)


def allocate(options: dict[str, list[Option]], budget: int, iterations: int = 100) -> Allocation:
    """The allocation of least predicted error whose total cost is at most ``budget`` (or the cheapest one,
    when even that exceeds it). Every layer's options must include its ``keep`` option."""
    original = sum(_keep(opts).macs for opts in options.values())

    def pick(price: float) -> dict[str, Option]:
        return {name: min(opts, key=lambda o: (o.error + price * o.macs, o.macs)) for name, opts in options.items()}

    def total(choice: dict[str, Option]) -> int:
        return sum(o.macs for o in choice.values())

    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget and hi < 1e12:
        hi *= 4
    best = pick(hi)
    if total(pick(lo)) <= budget:
        best = pick(lo)
    else:
        for _ in range(iterations):
            mid = (lo + hi) / 2
            choice = pick(mid)
            if total(choice) <= budget:
                hi, best = mid, choice
            else:
                lo = mid
    return Allocation(best, total(best), original, sum(o.error for o in best.values()))


def _keep(opts: list[Option]) -> Option:
    return next(o for o in opts if o.ranks is None)
