"""``segment --server URL`` (on a Triton server) and ``segment --ray [ADDRESS]`` (a cohort on Ray): the options
and what they run, kept here so ``segment`` itself only dispatches."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from tuckertrt.errors import UsageError

SCALE_OUT_OPTIONS = ("server", "ray_address", "workers", "threads_per_worker", "concurrency")


def scale_out_options(command: Callable) -> Callable:
    """--server, --concurrency, --ray, --workers and --threads-per-worker."""
    options = [
        click.option("--server", default=None, metavar="URL",
                     help="Segment on a `tuckertrt serve` server (http://HOST:PORT or grpc://HOST:PORT) instead "
                          "of loading the model here."),
        click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True,
                     help="--server: cases in flight at once."),
        click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Segment the cases on Ray: alone, a local Ray started for the run; `auto` or an "
                          "address, an existing cluster. Resumable; writes cohort_summary.json."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="--ray: actors, each loading the model once [default: 1]."),
        click.option("--threads-per-worker", type=click.IntRange(1), default=None,
                     help="--ray: CPU threads (and Ray CPUs) per actor [default: the machine's CPUs / workers]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def scaled_out(options: dict[str, Any]) -> bool:
    """Whether the scale-out options ask for anything (and that they are used together sensibly)."""
    server, ray = options["server"], options["ray_address"]
    if server and ray:
        raise UsageError("--server and --ray are two ways to segment: choose one")
    if not ray and (options["workers"] or options["threads_per_worker"]):
        raise UsageError("--workers and --threads-per-worker go with --ray")
    return bool(server or ray)


def run_scaled(ct: Path, output: Path, masks: bool, tile_step: float, options: dict[str, Any],
               load_args: dict[str, Any]) -> None:
    """Segment CT (a file or a folder of cases) on the server or the Ray cluster; exit 1 if any case failed."""
    from tuckertrt.inference.outputs import collect_inputs

    inputs = collect_inputs(ct)
    if options["server"]:
        if load_args["model"] is not None:
            raise UsageError("--model chooses a local model; with --server the server's model segments")
        from tuckertrt.serving.client import segment_remote

        def report(case: str, error: str | None) -> None:
            click.echo(f"{case}: FAILED: {error}" if error else f"{case}: done", err=bool(error))

        result = segment_remote(inputs, output, options["server"], masks, options["concurrency"], report)
        failed, total = len(result.failed), len(inputs)
    else:
        if load_args["model"] is None:
            raise UsageError("--ray needs --model")
        from tuckertrt.cli.serve import model_loader
        from tuckertrt.cohort import CohortOptions, cohort_plan, run_cohort

        cohort_plan(inputs, output, masks)  # outputs checked before the model is resolved
        address = None if options["ray_address"] == "local" else options["ray_address"]
        cohort = CohortOptions(address, options["workers"] or 1, options["threads_per_worker"], tile_step, masks,
                               progress=True)
        loader = model_loader(**load_args, threads=cohort.worker_threads())  # --backend auto resolved here, once
        summary = run_cohort(inputs, output, loader, cohort)
        click.echo(f"{summary.counts_line()} -> {summary.path}")
        failed, total = len(summary.failed), len(inputs)
    if failed:
        click.echo(f"{failed} of {total} cases failed", err=True)
        sys.exit(1)
