"""Partial Tucker decomposition of a convolution kernel over its two channel modes (Tucker-2).

HOSVD gives the initial factors (leading eigenvectors of each mode's Gram matrix, computed in float64, which is
exact and far cheaper than an SVD of the unfolding); optional HOOI sweeps refine them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tucker2:
    """``weight ≈ core ×_in U_in ×_out U_out`` (core has the ranks on the channel axes)."""

    core: torch.Tensor
    u_in: torch.Tensor  # (C_in, r_in), orthonormal columns
    u_out: torch.Tensor  # (C_out, r_out)


def mode_product(t: torch.Tensor, matrix: torch.Tensor, axis: int) -> torch.Tensor:
    """Multiply ``t`` along ``axis`` by ``matrix`` (shape (new, t.shape[axis]))."""
    return torch.movedim(torch.tensordot(matrix, torch.movedim(t, axis, 0), dims=1), 0, axis)


def leading_vectors(t: torch.Tensor, axis: int, rank: int) -> torch.Tensor:
    """The ``rank`` leading left singular vectors of the mode-``axis`` unfolding of ``t``."""
    unfolded = torch.movedim(t, axis, 0).reshape(t.shape[axis], -1)
    eigvals, eigvecs = torch.linalg.eigh(unfolded @ unfolded.T)
    return eigvecs[:, -rank:].flip(-1) if rank > 0 else eigvecs[:, :0]


def partial_tucker(weight: torch.Tensor, in_axis: int, out_axis: int, rank_in: int, rank_out: int,
                   hooi_iters: int = 0) -> Tucker2:
    """Tucker-2 of ``weight`` over its input/output channel axes (HOSVD init, then ``hooi_iters`` HOOI sweeps)."""
    w = weight.detach().to(torch.float64)
    u_in = leading_vectors(w, in_axis, rank_in)
    u_out = leading_vectors(w, out_axis, rank_out)
    for _ in range(hooi_iters):
        u_in = leading_vectors(mode_product(w, u_out.T, out_axis), in_axis, rank_in)
        u_out = leading_vectors(mode_product(w, u_in.T, in_axis), out_axis, rank_out)
    core = mode_product(mode_product(w, u_in.T, in_axis), u_out.T, out_axis)
    return Tucker2(core, u_in, u_out)


def reconstruct(t: Tucker2, in_axis: int, out_axis: int) -> torch.Tensor:
    return mode_product(mode_product(t.core, t.u_in, in_axis), t.u_out, out_axis)


def explained_variance(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """Appendix B: 1 − ‖W − Ŵ‖² / ‖W‖²."""
    w = weight.detach().to(torch.float64)
    total = float((w**2).sum())
    return 1.0 - float(((w - approx.to(torch.float64)) ** 2).sum()) / total if total > 0 else 1.0
