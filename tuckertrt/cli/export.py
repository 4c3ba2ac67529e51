"""``tuckertrt export`` and ``tuckertrt compare``."""
from __future__ import annotations

import json
import sys

import click

from tuckertrt.cli.options import decomposition_options, download_option, model_argument
from tuckertrt.cli.preflight import check_new_output_dir, positive_ints

MIN_OPSET, MAX_OPSET = 17, 20


@click.command("export")
@model_argument
@decomposition_options
@download_option
@click.option("--fp16/--no-fp16", default=True, show_default=True, help="Also write model_fp16.onnx.")
@click.option("--patch", nargs=3, type=int, default=None, metavar="Z Y X", callback=positive_ints,
              help="Static input patch in the network's axis order (default: the model's patch size).")
@click.option("--dynamic-batch", type=int, default=None, metavar="MAX", callback=positive_ints,
              help="Make the batch axis dynamic (up to MAX, recorded for engine profiles).")
@click.option("--simplifier", type=click.Choice(["onnxsim", "onnxslim", "none"]), default="onnxsim",
              show_default=True)
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=17, show_default=True,
              help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}: the TorchScript exporter's range with opset-17 norms).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare torch vs ONNX FP32 and FP32 vs FP16 on a real CT patch; results go in the manifest.")
@click.option("-o", "--output", default=None,
              help="Output directory (default: export/<model>_df<DF>/).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--triton-repo", type=click.Path(file_okay=False), default=None,
              help="Also write a Triton model repository (onnxruntime backend) for the network; see `triton`.")
def export(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None, download: bool,
           fp16: bool, patch: tuple[int, int, int] | None, dynamic_batch: int | None, simplifier: str, opset: int,
           verify: bool, output: str | None, as_json: bool, triton_repo: str | None) -> None:
    """Export MODEL (decomposed at --df) to ONNX FP32/FP16 with a manifest; exit 1 if a parity check fails."""
    from tuckertrt.cli.options import decomposed_as_asked
    from tuckertrt.decomposition import load_model
    from tuckertrt.parity.export import export_model

    if output:
        check_new_output_dir(output, model, ranks_file)
    loaded = decomposed_as_asked(load_model(model, download=download), df, min_rank, policy, ranks_file)
    result = export_model(loaded, output, patch=patch or None, fp16=fp16, simplifier=simplifier,
                          dynamic_batch=dynamic_batch, opset=opset, verify=verify)
    if as_json:
        click.echo(json.dumps(result.manifest, indent=2))
    else:
        click.echo(format_export(result))
    if not result.passed:
        sys.exit(1)
    if triton_repo:
        from tuckertrt.cli.serve import describe_repo
        from tuckertrt.serving.triton_repo import write_triton_repo

        click.echo(describe_repo(write_triton_repo(result.out_dir, triton_repo)))


def format_export(result) -> str:
    from tuckertrt.parity.compare import LogitStats

    graph = result.manifest["graph"]
    lines = [f"exported {result.manifest['model']['name']} to {result.out_dir}/ "
             f"(input {'x'.join(map(str, graph['input_shape']))}, opset {graph['opset']}, "
             f"{graph['structure']['conv_nodes']} conv nodes, {graph['structure']['decomposed_layers']} decomposed "
             f"layers)"]
    for name, entry in result.manifest["artifacts"].items():
        lines.append(f"  {name:<18} {entry['precision']:<5} {entry['size'] / 1e6:8.2f} MB  sha256 {entry['sha256'][:16]}")
    for name, comparison in result.manifest["comparisons"].items():
        lines.append(f"  {comparison['verdict']} {name}: {LogitStats(**comparison['stats'])}")
    lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in graph["seconds"].items()))
    return "\n".join(lines)


@click.command("compare")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--input", "input_npy", type=click.Path(dir_okay=False), default=None,
              help="A normalised input patch (.npy, (Z,Y,X) or (N,C,Z,Y,X)).")
@click.option("--ct", type=click.Path(dir_okay=False), default=None,
              help="A CT volume (.nii.gz) to normalise and crop/pad into a patch (default: the example CT).")
@click.option("--atol", type=float, default=None, help="Max abs error allowed (default: by precision).")
@click.option("--min-argmax", type=click.FloatRange(0, 1), default=None,
              help="Minimum fraction of voxels whose argmax class agrees (default: by precision).")
@click.option("--tie-margin", type=click.FloatRange(min=0), default=None,
              help="Judge argmax only on voxels whose top-2 logit margin in A is at least this "
                   "(default: 0.01 if A has random weights, else every voxel).")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON result.")
def compare(a: str, b: str, input_npy: str | None, ct: str | None, atol: float | None, min_argmax: float | None,
            tie_margin: float | None, as_json: bool) -> None:
    """Run artifacts A and B (ONNX files, export dirs, engines, or MODEL refs for PyTorch) on the same patch.

    Prints a verdict and a JSON result; exit 0 if they agree within the tolerance, 1 if not. Use
    DIR/model_fp16.onnx for an export's FP16 graph.
    """
    from tuckertrt.errors import UsageError
    from tuckertrt.parity.compare import compare_artifacts

    if input_npy and ct:
        raise UsageError("give --input or --ct, not both")
    result = compare_artifacts(a, b, input_npy=input_npy, ct=ct, atol=atol, min_argmax=min_argmax,
                               tie_margin=tie_margin)
    if not as_json:
        click.echo(result.summary())
    click.echo(json.dumps(result.to_json(), indent=2))
    if not result.passed:
        sys.exit(1)
