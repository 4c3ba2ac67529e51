"""Checks every command runs on its arguments before it loads a model or starts a long job."""
from __future__ import annotations

import contextlib
import math
import re
from pathlib import Path
from typing import Iterator, Sequence

import click

from tuckertrt.errors import UsageError
from tuckertrt.fileio import (Problems, check_input_file, check_replaceable, check_replaceable_file, check_separate,
                              check_writable, owned_files, write_marker, zip_holds)

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
                bounds = f"{'(' if low_open else '['}{'-inf' if low is None else f'{low:g}'}, " \
                         f"{'inf' if high is None else f'{high:g}'}]"
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
    from tuckertrt.data import BUNDLED_MODELS, bundled_model_folder
    from tuckertrt.errors import TuckerTRTError

    if ref in BUNDLED_MODELS:
        try:
            return [bundled_model_folder(ref)]
        except TuckerTRTError:  # a missing bundled model is reported when the model loads
            return []
    path = Path(ref)
    return [path] if path.exists() else []


def _ranks_inputs(ranks_file: str | None) -> list[Path]:
    """A --ranks value that names a file (not energy:F or vbmf), which must then be a readable file."""
    if not ranks_file or ranks_file == "vbmf" or ranks_file.startswith("energy:"):
        return []
    return [check_input_file(ranks_file, "--ranks file")]


def check_new_output_dir(output: str | Path, model: str, ranks_file: str | None = None,
                         inputs: Sequence[str | Path] = ()) -> None:
    """Pre-flight of a folder output: outside every input, replaceable (absent, empty or tuckertrt's own) and
    writable; all problems in one message."""
    problems = Problems()
    ranks = problems.check(_ranks_inputs, ranks_file) or []
    problems.check(check_separate, [output], [*model_paths(model), *ranks, *map(Path, inputs)])
    problems.check(check_replaceable, output)
    problems.check(check_writable, Path(output) / "x")
    problems.raise_if_any()


def check_new_model_file(output: str | Path, model: str, ranks_file: str | None = None) -> None:
    """Pre-flight of a saved-model output (``.pt``): as :func:`check_new_output_dir`, for one file that may
    replace only an earlier tuckertrt model file."""
    from tuckertrt.decomposition.serialize import FORMAT

    problems = Problems()
    ranks = problems.check(_ranks_inputs, ranks_file) or []
    problems.check(check_separate, [output], [*model_paths(model), *ranks])
    problems.check(check_replaceable_file, output, zip_holds(output, FORMAT.encode()))
    problems.check(check_writable, output)
    problems.raise_if_any()


def check_run_folder(output: str | Path, models: Sequence[str | None], inputs: Sequence[str | None],
                     ranks_file: str | None = None) -> None:
    """Pre-flight of a folder a command fills file by file (finetune, prune, variance, bench, report): outside
    every input, writable, and absent, empty or a folder an earlier tuckertrt run created (its marker, or a
    training state to --resume)."""
    from tuckertrt.training.recovery import STATE_FILE

    out = Path(output)
    problems = Problems()
    ranks = problems.check(_ranks_inputs, ranks_file) or []
    sources = [p for m in models if m for p in model_paths(m)] + [Path(p) for p in inputs if p] + ranks
    problems.check(check_separate, [out], sources)
    if out.exists() and not out.is_dir():
        problems.errors.append(UsageError(f"output {out} exists and is not a folder"))
    elif out.is_dir() and any(out.iterdir()) and owned_files(out) is None and not (out / STATE_FILE).is_file():
        problems.errors.append(UsageError(f"output folder {out} exists and was not written by tuckertrt; choose a "
                                          f"new or empty folder"))
    problems.check(check_writable, out / "x")
    problems.raise_if_any()


@contextlib.contextmanager
def marked_output(output: str | Path) -> Iterator[None]:
    """Mark a run folder as tuckertrt's when the run ends (however it ends), so a later run may resume or
    rewrite it."""
    try:
        yield
    finally:
        out = Path(output)
        if out.is_dir():
            write_marker(out, kind="run")
