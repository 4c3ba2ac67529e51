"""``tuckertrt segment``: full-CT segmentation of NIfTI files or DICOM series on any backend."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from tuckertrt.backends.registry import AUTO
from tuckertrt.cli.backend_option import backend_asked, backend_option, cache_dir_option, open_auto_models
from tuckertrt.cli.options import decomposition_options, download_option, tile_step_option
from tuckertrt.cli.preflight import check_device, model_paths
from tuckertrt.cli.ts_options import ts_output_options, ts_outputs
from tuckertrt.cli.scale_out import run_scaled, scale_out_options, scaled_out
from tuckertrt.errors import UsageError


@click.command("segment")
@click.argument("ct", metavar="CT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="A .nii.gz file for one CT, or a folder (one <case>.nii.gz per CT).")
@click.option("--model", "model_ref", default=None,
              help="Model ref (fixture-3mm, total-3mm, a results folder...); required unless --server.")
@decomposition_options
@download_option
@backend_option()
@click.option("--artifacts", type=click.Path(path_type=Path), default=None,
              help="For onnxruntime/openvino: an export folder (with manifest.json) or .onnx file; "
                   "for tensorrt: an engine file.")
@click.option("--precision", default=None, help="Backend precision (fp32, fp16, bf16...; default fp32; auto "
                                                "chooses its own).")
@cache_dir_option
@tile_step_option
@click.option("--masks", is_flag=True, help="Also write one binary mask NIfTI per class.")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@ts_output_options
@scale_out_options
def segment(ct: Path, output: Path, model_ref: str, df: float | None, min_rank: int, policy: str,
            ranks_file: str | None, download: bool, backend: str | None, artifacts: Path | None, precision: str | None,
            cache_dir: Path | None, tile_step: float, masks: bool, device: str | None, roi_subset: tuple[str, ...],
            statistics: bool, stats_include_incomplete: bool, output_type: str, **scale_out) -> None:
    """Segment CT (a NIfTI file, a DICOM series folder, or a folder of NIfTI files) into labels in its own grid.

    Exits 1 if any case failed (the others are still written)."""
    from tuckertrt.fileio import check_separate
    from tuckertrt.inference.io import probe_ct
    from tuckertrt.inference.outputs import collect_inputs
    from tuckertrt.inference.segment import segment_many

    decomposition = (df, min_rank, policy, ranks_file)
    if scaled_out(scale_out):  # on a Triton server or a Ray cluster
        return run_scaled(ct, output, masks, tile_step, scale_out, dict(
            model=model_ref, decomposition=decomposition, download=download, backend=backend, artifacts=artifacts,
            precision=precision, device=device, cache_dir=cache_dir))
    if model_ref is None:
        raise UsageError("Missing option '--model'.")
    inputs = collect_inputs(ct)
    check_device(device)
    if len(inputs) == 1:
        probe_ct(inputs[0])
    ts = ts_outputs(roi_subset, statistics, stats_include_incomplete, output_type)
    segment_many(inputs, output, [], masks=masks, check_only=True, ts=ts)  # outputs checked before any model loads
    check_separate([output], model_paths(model_ref) + ([artifacts] if artifacts else []))
    backend = backend_asked(backend, artifacts, precision, device)
    if backend == AUTO:
        runners = [auto.runner for auto in open_auto_models(model_ref, decomposition, download, cache_dir)]
    else:
        runners = _runners(model_ref, decomposition, download, backend, artifacts, precision or "fp32", device)

    def report(case: str, error: str | None) -> None:
        if error:
            click.echo(f"{case}: FAILED: {error}", err=True)

    result = segment_many(inputs, output, runners, tile_step=tile_step, masks=masks,
                          progress=sys.stderr.isatty(), keep_going=len(inputs) > 1, on_case=report,
                          ts=ts)
    for case, summary in result.summaries.items():
        click.echo(f"{case}: {len(summary['present'])} classes, {summary['tiles']} tiles, "
                   f"{summary['seconds']:.1f} s -> {result.written[case][0]}")
    if result.failed:
        click.echo(f"{len(result.failed)} of {len(inputs)} cases failed", err=True)
        sys.exit(1)


def _runners(model_ref: str, decomposition: tuple, download: bool, backend: str, artifacts: Path | None,
             precision: str, device: str | None) -> list:
    from tuckertrt.cli.options import decomposed_as_asked
    from tuckertrt.decomposition import load_models
    from tuckertrt.inference.segment import Runner, as_runner

    models = load_models(model_ref, download=download)
    if backend == "torch":
        if artifacts is not None:
            raise UsageError("--artifacts is for the onnxruntime/openvino/tensorrt backends, not torch")
        return [as_runner(decomposed_as_asked(m, *decomposition), device, precision) for m in models]
    if artifacts is None:
        raise UsageError(f"--backend {backend} needs --artifacts (an export folder or engine)")
    if len(models) != 1:
        raise UsageError(f"{model_ref} is a set of {len(models)} models; --backend {backend} runs one artifact, "
                         f"use --backend torch or segment with each part's artifact")
    if decomposition[0] is not None or decomposition[3] is not None:
        raise UsageError("--df/--ranks apply to --backend torch; an artifact is already decomposed (or not)")
    from tuckertrt.backends import open_backend

    spec = models[0].spec
    runner = Runner(spec, open_backend(backend, artifacts, precision, head="auto"), {"artifact": str(artifacts)})
    expected = (spec.input_channels, *spec.patch_size)
    if tuple(runner.predictor.input_shape[1:]) != expected:
        raise UsageError(f"{artifacts} takes input {tuple(runner.predictor.input_shape)}, but {spec.name} needs "
                         f"(1, {', '.join(map(str, expected))})")
    return [runner]
