"""The factorised layer: an ordinary nn.Module of three convolutions, built ``from_conv``."""
from __future__ import annotations

import torch
from torch import nn

from tuckertrt.decomposition.tucker import Tucker2, partial_tucker

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POINTWISE = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def channel_axes(conv: nn.Module) -> tuple[int, int]:
    """(in_axis, out_axis) of a conv weight: (C_out, C_in, k…) for Conv, (C_in, C_out, k…) for ConvTranspose."""
    return (0, 1) if isinstance(conv, TRANSPOSED_TYPES) else (1, 0)


def unsupported_reason(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot be Tucker-2 decomposed, or None."""
    if not isinstance(conv, CONV_TYPES + TRANSPOSED_TYPES):
        return f"not a convolution ({type(conv).__name__})"
    if conv.groups != 1:
        return "grouped convolution"
    if conv.padding_mode != "zeros":
        return f"padding mode {conv.padding_mode}"
    return None


class TuckerConv(nn.Module):
    """``project_in`` (1×1, C_in→r_in) → ``core`` (original kernel/stride/padding, r_in→r_out; transposed for a
    ConvTranspose) → ``project_out`` (1×1, r_out→C_out, with the original bias)."""

    def __init__(self, project_in: nn.Module, core: nn.Module, project_out: nn.Module):
        super().__init__()
        self.project_in = project_in
        self.core = core
        self.project_out = project_out

    @property
    def ranks(self) -> tuple[int, int]:
        return self.project_in.out_channels, self.project_out.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.core(self.project_in(x)))

    @classmethod
    def empty_like(cls, conv: nn.Module, rank_in: int, rank_out: int) -> "TuckerConv":
        """The structure for ``conv`` at the given ranks, with uninitialised weights (for loading a state dict)."""
        reason = unsupported_reason(conv)
        if reason:
            raise ValueError(f"cannot decompose: {reason}")
        dim = conv.weight.dim() - 2
        pointwise = _POINTWISE[dim]
        kwargs = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, bias=False)
        if isinstance(conv, TRANSPOSED_TYPES):
            kwargs["output_padding"] = conv.output_padding
        factory = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        return cls(
            pointwise(conv.in_channels, rank_in, 1, bias=False, **factory),
            type(conv)(rank_in, rank_out, **kwargs, **factory),
            pointwise(rank_out, conv.out_channels, 1, bias=conv.bias is not None, **factory),
        )

    @classmethod
    def from_conv(cls, conv: nn.Module, rank_in: int, rank_out: int, hooi_iters: int = 0) -> "TuckerConv":
        """Decompose ``conv`` (Conv or ConvTranspose, 1–3D) at ranks (r_in, r_out)."""
        layer = cls.empty_like(conv, rank_in, rank_out)
        in_axis, out_axis = channel_axes(conv)
        layer.load_factors(partial_tucker(conv.weight, in_axis, out_axis, rank_in, rank_out, hooi_iters), conv)
        return layer

    @torch.no_grad()
    def load_factors(self, t: Tucker2, conv: nn.Module) -> None:
        dtype = conv.weight.dtype
        spatial = (1,) * (conv.weight.dim() - 2)
        self.project_in.weight.copy_(t.u_in.T.reshape(*t.u_in.T.shape, *spatial).to(dtype))
        self.core.weight.copy_(t.core.to(dtype))
        self.project_out.weight.copy_(t.u_out.reshape(*t.u_out.shape, *spatial).to(dtype))
        if conv.bias is not None:
            self.project_out.bias.copy_(conv.bias)
