"""Checks every command runs on its arguments before it loads a model or starts a long job."""
from __future__ import annotations

import math
import re
from pathlib import Path

import click

from tuckertrt.errors import UsageError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|auto)$")


def check_device(device: str | None, option: str = "--device") -> None:
    """``cpu``, ``auto``, ``cuda`` or ``cuda:N``; CUDA ones only where torch sees that GPU."""
    if device is None or device in ("cpu", "auto"):
        return
    if not _DEVICE.match(device):
        raise UsageError(f"{option} must be cpu, cuda, cuda:N or auto, got {device!r}")
    import torch

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise UsageError(f"{option} {device}: this machine has no CUDA GPU that torch can use (use --device cpu)")
    if index >= torch.cuda.device_count():
        raise UsageError(f"{option} {device}: only {torch.cuda.device_count()} CUDA device(s) here")


def finite(low: float | None = None, high: float | None = None, low_open: bool = False):
    """A click callback refusing NaN/infinite values and values outside [low, high] (``(low`` with low_open)."""
    def check(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return value
        values = value if isinstance(value, tuple) else (value,)
        name = "--" + param.name.replace("_", "-")
        for v in values:
            bad = not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) \
                or (high is not None and v > high)
            if bad:
                left = "(" if low_open else "["
                bounds = f"{left}{'-inf' if low is None else low:g}, {'inf' if high is None else high:g}]"
                raise UsageError(f"{name} must be a finite number in {bounds}, got {v}")
        return value
    return check


def positive_ints(ctx: click.Context, param: click.Parameter, value):
    """A click callback for integer options (or tuples of them) that must be >= 1."""
    if value is None:
        return value
    values = value if isinstance(value, tuple) else (value,)
    if any(v < 1 for v in values):
        raise UsageError(f"--{param.name.replace('_', '-')} must be positive, got {' '.join(map(str, values))}")
    return value


def model_paths(ref: str) -> list[Path]:
    """The files behind a MODEL argument that an output must never replace or land in."""
    from tuckertrt.errors import TuckerTRTError
    from tuckertrt.models.resolve import FIXTURE_NAMES, _fixture_folder

    if ref in FIXTURE_NAMES:
        try:
            return [_fixture_folder(ref)]
        except TuckerTRTError:  # a missing fixture is reported when the model loads
            return []
    path = Path(ref)
    return [path] if path.exists() else []
