"""Which layers to decompose, at which ranks."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Union

from torch import nn

from tuckertrt.decomposition.layers import CONV_TYPES, TRANSPOSED_TYPES, unsupported_reason
from tuckertrt.errors import TuckerTRTError, UsageError

RankValue = Union[tuple[int, int], str]  # (r_in, r_out) or "keep"
POLICIES = ("default", "paper")


def rank_for(channels: int, df: float, min_rank: int) -> int:
    """r = min(C, max(r_min, ceil(DF·C))); the product is rounded to 9 decimals first so that e.g. 0.3·320
    gives 96, not 97 from floating-point noise."""
    return min(channels, max(min_rank, math.ceil(round(df * channels, 9))))


def decomposed_params(conv: nn.Module, rank_in: int, rank_out: int) -> int:
    k = math.prod(conv.kernel_size)
    bias = conv.out_channels if conv.bias is not None else 0
    return conv.in_channels * rank_in + rank_in * rank_out * k + rank_out * conv.out_channels + bias


def conv_layers(network: nn.Module) -> dict[str, nn.Module]:
    """Every conv of the network once, under its first name (nnU-Net blocks reach one conv by two names)."""
    return {name: m for name, m in network.named_modules() if isinstance(m, CONV_TYPES + TRANSPOSED_TYPES)}


def load_rank_file(path: str | Path) -> dict[str, RankValue]:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TuckerTRTError(f"rank file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise TuckerTRTError(f"rank file {path} is not valid JSON: {e}") from None
    ranks = raw.get("ranks", raw) if isinstance(raw, dict) else raw
    if not isinstance(ranks, dict):
        raise TuckerTRTError(f"rank file {path} must hold an object {{layer: [r_in, r_out] | \"keep\"}}, "
                             f"not a {type(ranks).__name__}")
    return ranks


def rank_spec(value: str | None, network: nn.Module, min_rank: int = 8) -> dict[str, RankValue] | None:
    """What ``--ranks`` names (the one parser of that option): a JSON file of per-layer ranks, ``energy:F`` (per
    layer, the smallest ranks that keep the fraction F of each channel mode's energy) or ``vbmf`` (variational
    Bayesian matrix factorisation); None when the option is not given."""
    if value is None:
        return None
    if value == "auto":
        raise UsageError("--ranks auto chooses ranks on calibration CTs: use it with decompose --calibrate or build")
    if value == "vbmf" or value.startswith("energy:"):
        from tuckertrt.decomposition.select import spectral_spec

        if value == "vbmf":
            return spectral_spec(network, "vbmf", min_rank=min_rank)
        try:
            energy = float(value.partition(":")[2])
        except ValueError:
            raise UsageError(f"--ranks energy:F needs a number F in (0, 1], got {value!r}") from None
        return spectral_spec(network, "energy", energy, min_rank)
    return load_rank_file(value)


def plan_ranks(network: nn.Module, df: float | None, min_rank: int = 8, policy: str = "default",
               ranks: dict[str, RankValue] | None = None) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Return ``(chosen, skipped)``: ranks per decomposed layer, and the reason each other conv is kept.

    Explicit ``ranks`` win; other layers follow the DF rule (or are kept when no DF is given, or at DF 1: DF 1 is
    the original model). Policy ``paper`` decomposes every conv; ``default`` keeps a layer whose decomposition would
    not reduce its parameters.
    """
    if df is not None and not 0 < df <= 1:
        raise UsageError(f"DF must be in (0, 1], got {df}")
    if isinstance(min_rank, bool) or not isinstance(min_rank, int) or min_rank < 1:
        raise UsageError(f"min rank must be a positive integer, got {min_rank!r}")
    if policy not in POLICIES:
        raise UsageError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
    layers = conv_layers(network)
    ranks = dict(ranks or {})
    unknown = sorted(set(ranks) - set(layers))
    if unknown:
        raise TuckerTRTError(f"rank spec names {len(unknown)} unknown layers (e.g. {unknown[0]})")
    chosen: dict[str, tuple[int, int]] = {}
    skipped: dict[str, str] = {}
    for name, conv in layers.items():
        reason = unsupported_reason(conv)
        if reason:
            skipped[name] = reason
            continue
        if name in ranks:
            value = ranks[name]
            if value == "keep":
                skipped[name] = "kept by the rank spec"
                continue
            r_in, r_out = _checked_pair(name, value, conv)
        elif df is None:
            skipped[name] = "not in the rank spec"
            continue
        elif df == 1:  # DF 1 is the original model in every policy (Table 1's DF 1 row)
            skipped[name] = "DF 1 keeps the original layer"
            continue
        else:
            r_in, r_out = rank_for(conv.in_channels, df, min_rank), rank_for(conv.out_channels, df, min_rank)
            if policy == "default" and decomposed_params(conv, r_in, r_out) >= conv.weight.numel() + (
                    conv.out_channels if conv.bias is not None else 0):
                skipped[name] = "decomposition would not reduce parameters"
                continue
        chosen[name] = (r_in, r_out)
    return chosen, skipped


def _checked_pair(name: str, value: object, conv: nn.Module) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise TuckerTRTError(f"rank spec for {name} must be [r_in, r_out] or \"keep\", got {value!r}")
    r_in, r_out = value
    if not (1 <= r_in <= conv.in_channels and 1 <= r_out <= conv.out_channels):
        raise TuckerTRTError(f"ranks {value} for {name} outside [1, {conv.in_channels}] × [1, {conv.out_channels}]")
    return r_in, r_out
