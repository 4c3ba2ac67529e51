"""``tuckertrt build``: the whole job on one model."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from tuckertrt.backends.registry import AUTO, ONNX_BACKENDS
from tuckertrt.cli.options import decomposition_options, download_option, gate_options, tile_step_option

DEFAULT_MODEL = "fixture-3mm"
BUILD_BACKENDS = [AUTO, *ONNX_BACKENDS, "torch"]


@click.command("build")
@click.argument("model", metavar="MODEL", default=DEFAULT_MODEL)
@decomposition_options
@download_option
@click.option("--fp16", is_flag=True, help="Also write FP16 graphs (and FP16 engines where TensorRT runs).")
@click.option("--backend", type=click.Choice(BUILD_BACKENDS), default=AUTO,
              show_default=True, help="Runtime for validation; auto = fastest installed one that passes parity.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Precision on an explicit --backend (default fp32).")
@click.option("--validate", "validate", multiple=True, type=click.Path(exists=True),
              help="CT (NIfTI or DICOM folder) to validate on; repeatable. Default: the bundled example CT.")
@click.option("--reference", "references", multiple=True, type=click.Path(exists=True),
              help="Ground-truth labels for each --validate CT, in order.")
@gate_options
@tile_step_option
@click.option("--distill", multiple=True, type=click.Path(exists=True),
              help="Unlabelled CTs to distil the compressed model on before export (repeatable).")
@click.option("--distill-iterations", default=200, show_default=True)
@click.option("--rtx", is_flag=True, help="Also build TensorRT-RTX engines ahead of time (no GPU needed).")
@click.option("--no-engines", is_flag=True, help="Skip the TensorRT engine step.")
@click.option("-o", "--output", default="build/default", show_default=True, type=click.Path(file_okay=False))
def build(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None, download: bool,
          fp16: bool, backend: str, precision: str | None, validate: tuple[str, ...], references: tuple[str, ...],
          min_dice: float, min_class_dice: float, tile_step: float, distill: tuple[str, ...],
          distill_iterations: int, rtx: bool, no_engines: bool, output: str) -> None:
    """Decompose MODEL, export and simplify it, build engines, validate segmentation parity, write a report.

    Exit code 0 when the parity gates hold, 1 when they fail, 2 on usage errors.
    """
    from tuckertrt.decomposition.ranks import rank_spec
    from tuckertrt.models import load_model
    from tuckertrt.parity.gate import ParityGate
    from tuckertrt.pipeline import BuildOptions, run_build

    gate = ParityGate(min_dice, min_class_dice)  # checks the range before anything loads
    loaded = load_model(model, download=download)
    options = BuildOptions(
        df=df if df is not None or ranks_file else 0.3, min_rank=min_rank, policy=policy,
        ranks=rank_spec(ranks_file, loaded.network, min_rank), fp16=fp16, backend=backend,
        precision=precision, validate=[Path(p) for p in validate], references=[Path(p) for p in references],
        gate=gate, tile_step=tile_step, distill=[Path(p) for p in distill],
        distill_iterations=distill_iterations, engines=not no_engines, rtx=rtx, progress=sys.stderr.isatty())
    options.check()
    outcome = run_build(loaded, output, options, log=lambda m: click.echo(m, err=True))
    gates = outcome.report["gates"]
    click.echo(f"{'PASSED' if outcome.passed else 'FAILED'}: mean Dice vs uncompressed {gates['mean_dice']:.4f}, "
               f"patch speedup {outcome.report['patch_speedup']:.2f}× on {outcome.report['backend']['name']} "
               f"{outcome.report['backend']['precision']}; report: {Path(output) / 'report.md'}")
    sys.exit(0 if outcome.passed else 1)
