"""``tuckertrt build``: the whole job on one model."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from tuckertrt.backends.registry import AUTO, ONNX_BACKENDS
from tuckertrt.cli.options import decomposition_options, download_option, gate_options, tile_step_option
from tuckertrt.cli.preflight import check_new_output_dir, positive_ints

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
@click.option("--distill-iterations", default=200, show_default=True, callback=positive_ints)
@click.option("--macs", type=float, default=None, help="With --ranks auto: the fraction of the original's "
                                                       "multiply-accumulates to spend.")
@click.option("--speedup", type=float, default=None, help="With --ranks auto: the measured speedup to reach "
                                                          "(OpenVINO bf16, as deployed on this machine).")
@click.option("--init", "init", type=click.Choice(["data", "hosvd"]), default="data", show_default=True,
              help="data: Tucker factors fitted to the original layers' outputs on calibration CTs; hosvd: from "
                   "the weights alone (the paper's method, Table 1).")
@click.option("--calibrate", multiple=True, type=click.Path(exists=True),
              help="CTs for the data-aware factors and --ranks auto (default: the --distill CTs, else the "
                   "bundled example CT).")
@click.option("--device", default="cpu", show_default=True, help="torch device for calibration and distillation.")
@click.option("--rtx", is_flag=True, help="Also build TensorRT-RTX engines ahead of time (no GPU needed).")
@click.option("--no-engines", is_flag=True, help="Skip the TensorRT engine step.")
@click.option("-o", "--output", default="build/default", show_default=True, type=click.Path(file_okay=False))
def build(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None, download: bool,
          fp16: bool, backend: str, precision: str | None, validate: tuple[str, ...], references: tuple[str, ...],
          min_dice: float, min_class_dice: float, tile_step: float, distill: tuple[str, ...],
          distill_iterations: int, macs: float | None, speedup: float | None, init: str,
          calibrate: tuple[str, ...], device: str, rtx: bool, no_engines: bool, output: str) -> None:
    """Decompose MODEL, export and simplify it, build engines, validate segmentation parity, write a report.

    Exit code 0 when the parity gates hold, 1 when they fail, 2 on usage errors.
    """
    from tuckertrt.decomposition import load_model
    from tuckertrt.decomposition.ranks import rank_spec
    from tuckertrt.errors import UsageError
    from tuckertrt.parity.gate import ParityGate
    from tuckertrt.pipeline import BuildOptions, run_build

    gate = ParityGate(min_dice, min_class_dice)  # checks the range before anything loads
    auto = ranks_file == "auto"
    if (macs is not None or speedup is not None) and not auto:
        raise UsageError("--macs and --speedup go with --ranks auto")
    check_new_output_dir(output, model, None if auto else ranks_file, [*validate, *references, *distill, *calibrate])
    loaded = load_model(model, download=download)
    options = BuildOptions(
        df=df if df is not None or ranks_file else 0.3, min_rank=min_rank, policy=policy,
        ranks=None if auto else rank_spec(ranks_file, loaded.network, min_rank),
        auto_macs=macs, auto_speedup=speedup, init=init, calibrate=[Path(p) for p in calibrate], device=device,
        fp16=fp16, backend=backend,
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
