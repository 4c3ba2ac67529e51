"""``tuckertrt stats`` and ``tuckertrt decompose``."""
from __future__ import annotations

import json

import click

from tuckertrt.cli.options import decomposed_as_asked, decomposition_options, download_option, model_argument
from tuckertrt.cli.preflight import check_new_model_file


def format_table(report: dict) -> str:
    lines = [f"{report['model']}  patch {'×'.join(map(str, report['patch']))}  DF {report['df']}  "
             f"min rank {report['min_rank']}  policy {report['policy']}",
             f"{'layer':<44} {'kind':<15} {'in':>4} {'out':>4} {'ranks':>9} {'params':>17} {'GMACs':>15} {'EV':>6}"]
    for r in report["layers"]:
        ranks = f"{r['ranks'][0]},{r['ranks'][1]}" if r["ranks"] else "-"
        ev = f"{r['explained_variance']:.3f}" if r["explained_variance"] is not None else ""
        lines.append(f"{r['name'][-44:]:<44} {r['kind']:<15} {r['in_channels']:>4} {r['out_channels']:>4} "
                     f"{ranks:>9} {r['params_original']:>8}→{r['params']:<8} "
                     f"{r['macs_original'] / 1e9:>7.3f}→{r['macs'] / 1e9:<7.3f} {ev:>6}")
    lines.append(f"total params {report['params_original'] / 1e6:.6f} M → {report['params'] / 1e6:.6f} M "
                 f"(CR {report['compression_ratio']:.2f}); GMACs {report['gmacs_original']:.3f} → "
                 f"{report['gmacs']:.3f} ({report['mac_ratio']:.2f}× fewer)")
    if report["skipped"]:
        lines.append(f"kept as original: {len(report['skipped'])} layers (see --json 'skipped' for why)")
    return "\n".join(lines)


@click.command("stats")
@model_argument
@decomposition_options
@download_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (a list for model sets).")
def stats(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None, download: bool,
          as_json: bool) -> None:
    """Parameters and multiply-accumulates of MODEL, original vs decomposed, per layer and in total."""
    from tuckertrt.decomposition.accounting import summarize
    from tuckertrt.decomposition import load_models

    reports = [summarize(m, decomposed_as_asked(m, df, min_rank, policy, ranks_file)) for m in load_models(model,
                                                                                                   download=download)]
    if as_json:
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        click.echo("\n\n".join(format_table(r) for r in reports))


@click.command("decompose")
@model_argument
@decomposition_options
@download_option
@click.option("--hooi-iters", default=0, show_default=True, type=click.IntRange(0, 100),
              help="HOOI refinement sweeps after the HOSVD initialisation.")
@click.option("--calibrate", multiple=True, type=click.Path(exists=True),
              help="CTs to fit the factors on (data-aware: each layer fitted to the original layer's outputs); "
                   "without it the factors come from the weights, as in the paper. Needed by --ranks auto.")
@click.option("--macs", type=float, default=None, help="--ranks auto: fraction of the original's MACs to spend.")
@click.option("--speedup", type=float, default=None,
              help="--ranks auto: measured speedup to reach (OpenVINO bf16 on this machine, as deployed).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file (.pt): state dict + rank spec + plans, loadable as MODEL by every command.")
def decompose_cmd(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None,
                  download: bool, hooi_iters: int, calibrate: tuple[str, ...], macs: float | None,
                  speedup: float | None, output: str) -> None:
    """Decompose MODEL and save it (with --ranks auto: ranks chosen for quality within a MAC or speed budget)."""
    from tuckertrt.decomposition import decompose, load_model
    from tuckertrt.decomposition.ranks import rank_spec
    from tuckertrt.decomposition.serialize import save_decomposed
    from tuckertrt.errors import UsageError

    auto = ranks_file == "auto"
    if df is None and ranks_file is None:
        raise UsageError("give --df or --ranks")
    if auto and not calibrate:
        raise UsageError("--ranks auto measures each layer's sensitivity on CTs: give --calibrate CT...")
    if (macs is not None or speedup is not None) and not auto:
        raise UsageError("--macs and --speedup go with --ranks auto")
    check_new_model_file(output, model, None if auto else ranks_file)
    loaded = load_model(model, download=download)
    images = None
    if calibrate:
        from tuckertrt.training.calibration import calibration_images

        images = calibration_images(calibrate, loaded.spec)
    chosen = None
    if auto:
        from tuckertrt.pipeline.auto_ranks import auto_ranks

        chosen = auto_ranks(loaded, images, macs=macs, speedup=speedup, min_rank=min_rank)
        ranks = chosen.allocation.rank_spec()
    else:
        ranks = rank_spec(ranks_file, loaded.network, min_rank)
    result = decompose(loaded, df=None if auto else df, min_rank=min_rank, policy=policy, ranks=ranks,
                       hooi_iters=hooi_iters, calibration=images)
    if chosen:
        result.decomposition["auto_ranks"] = chosen.to_json()
        click.echo(f"auto ranks for {chosen.target}: {chosen.mac_fraction:.3f} of the MACs, predicted "
                   f"layer error {chosen.allocation.predicted_error:.3f}" + "".join(
                       f"; measured {r['speedup']:.2f}× at {r['mac_fraction']:.3f}" for r in chosen.rounds)
                   + ("" if chosen.met else " (target not reached: these are the cheapest ranks)"))
    save_decomposed(result, output)
    info = result.decomposition
    click.echo(f"wrote {output}: {len(info['ranks'])} layers decomposed, {len(info['skipped'])} kept, "
               f"in {info['seconds']:.1f} s")
