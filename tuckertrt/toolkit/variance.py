"""Explained variance of Tucker-2 kernels over every (rank_in, rank_out) (paper Appendix B).

With HOSVD factors (what ``decompose`` uses without HOOI) the approximation at ranks (r_in, r_out) is the
orthogonal projection of the kernel onto the leading r_in input and r_out output singular vectors, so
``‖Ŵ‖² = ‖G[:r_out, :r_in]‖²`` for the fully projected kernel ``G = W ×_in U_inᵀ ×_out U_outᵀ`` and
``‖W − Ŵ‖² = ‖W‖² − ‖Ŵ‖²``. One projection and a 2D cumulative sum give the whole grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tuckertrt.decomposition.layers import channel_axes
from tuckertrt.decomposition.ranks import rank_for
from tuckertrt.decomposition.tucker import leading_vectors, mode_product
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.loaded import LoadedModel
from tuckertrt.toolkit.pruning import forward_convs

DF_STEPS = tuple(round(0.05 * i, 2) for i in range(1, 21))


def variance_grid(weight: torch.Tensor, in_axis: int, out_axis: int) -> np.ndarray:
    """``grid[r_out - 1, r_in - 1]``: retained variance 1 − ‖W − Ŵ‖²/‖W‖² of the HOSVD Tucker-2 at those
    ranks."""
    w = weight.detach().to(torch.float64)
    total = float((w**2).sum())
    if total == 0:
        return np.ones((w.shape[out_axis], w.shape[in_axis]))
    u_in = leading_vectors(w, in_axis, w.shape[in_axis])
    u_out = leading_vectors(w, out_axis, w.shape[out_axis])
    g = mode_product(mode_product(w, u_in.T, in_axis), u_out.T, out_axis)
    energy = torch.movedim(g**2, (out_axis, in_axis), (0, 1)).reshape(g.shape[out_axis], g.shape[in_axis], -1)
    return (energy.sum(-1).cumsum(0).cumsum(1) / total).clamp(max=1.0).numpy()


@dataclass
class LayerVariance:
    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    grid: np.ndarray  # (C_out, C_in)
    ranks: tuple[int, int]  # at the chosen DF

    def at(self, rank_in: int, rank_out: int) -> float:
        return float(self.grid[rank_out - 1, rank_in - 1])

    def at_df(self, df: float, min_rank: int) -> float:
        return self.at(rank_for(self.in_channels, df, min_rank), rank_for(self.out_channels, df, min_rank))

    def to_json(self, min_rank: int) -> dict:
        return {"name": self.name, "kind": self.kind, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel": list(self.kernel), "ranks": list(self.ranks),
                "explained_variance": self.at(*self.ranks),
                "by_df": {str(df): self.at_df(df, min_rank) for df in DF_STEPS}}


def layer_variances(model: LoadedModel, df: float, min_rank: int = 8) -> list[LayerVariance]:
    """Every conv the forward pass runs, in network order, with its full variance grid."""
    if model.is_decomposed or model.extra.get("pruning"):
        raise TuckerTRTError(f"{model.name} is already compressed; explained variance needs the original kernels")
    layers = []
    for name, conv in forward_convs(model.network, model).items():
        in_axis, out_axis = channel_axes(conv)
        ranks = (rank_for(conv.in_channels, df, min_rank), rank_for(conv.out_channels, df, min_rank))
        layers.append(LayerVariance(name, type(conv).__name__, conv.in_channels, conv.out_channels,
                                    tuple(conv.kernel_size), variance_grid(conv.weight, in_axis, out_axis), ranks))
    return layers
