"""``--backend`` and ``--cache-dir`` of the commands that segment (``segment``, ``serve``, ``segment --ray``), and
``--backend auto`` resolved once in the command's own process."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from tuckertrt.backends.registry import AUTO, BACKENDS
from tuckertrt.errors import UsageError

BACKEND_HELP = ("auto (the default): the fastest runtime that passes parity on this machine, exported on first use "
                "and cached; torch: eager PyTorch (debugging); the others run --artifacts.")


def backend_option(note: str = "") -> Callable:
    return click.option("--backend", type=click.Choice([AUTO, *BACKENDS]), default=None,
                        help=BACKEND_HELP + (f" {note}" if note else ""))


cache_dir_option = click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help="Cache of --backend auto (default: $TUCKERTRT_CACHE, else ~/.cache/tuckertrt).")


def backend_asked(backend: str | None, artifacts: Path | None, precision: str | None, device: str | None) -> str:
    """The backend the options ask for: an explicit one, else ``auto``. ``--precision``/``--device`` without
    ``--backend`` keep their old meaning (eager PyTorch), with a deprecation warning."""
    if backend is None and (precision is not None or device is not None):
        click.echo("warning: --precision/--device without --backend run eager PyTorch as before; this is "
                   "deprecated, say --backend torch (the default is now auto)", err=True)
        return "torch"
    if backend in (None, AUTO) and artifacts is not None:
        raise UsageError("--artifacts needs an explicit --backend (onnxruntime, openvino or tensorrt); the "
                         "default, auto, exports and chooses its own")
    return backend or AUTO


def open_auto_models(model_ref: str, decomposition: tuple, download: bool, cache_dir: Path | None,
                     log: Callable[[str], None] = click.echo) -> list:
    """``--backend auto`` for MODEL (each part of a set): every :class:`~tuckertrt.bench.auto_backend.AutoBackend`
    opened from the cache, or exported and measured now; the chosen runtime and the cache entry go to ``log``."""
    from tuckertrt.cli.options import decomposed_as_asked
    from tuckertrt.bench.auto_backend import open_auto
    from tuckertrt.decomposition import load_models

    autos = []
    for model in load_models(model_ref, download=download):
        auto = open_auto(decomposed_as_asked(model, *decomposition), cache_dir, log=log)
        log(f"{model.name}: backend {auto.describe()}")
        autos.append(auto)
    return autos
