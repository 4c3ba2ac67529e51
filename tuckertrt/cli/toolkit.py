"""``tuckertrt variance``, ``finetune``, ``prune`` and ``report``: the paper's experimental toolkit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from tuckertrt.cli.options import (df_option, download_option, min_rank_option, model_argument, policy_option,
                                   ranks_option)
from tuckertrt.cli.preflight import check_device, check_run_folder, finite, marked_output, positive_ints

DEFAULT_VARIANCE_DF = 0.3


def _training_options(f: Callable) -> Callable:
    """Options of every command that runs the training loop."""
    options = [
        click.argument("cts", nargs=-1, metavar="[CTS]..."),
        click.option("--data", "dataset", type=click.Path(file_okay=False), default=None,
                     help="Labelled dataset: nnU-Net v2 raw folder or TotalSegmentator-style case folders."),
        click.option("--distill", is_flag=True,
                     help="Distil from the uncompressed model on CTS (NIfTI files, DICOM folders, folders of "
                          "them) and on the dataset's images."),
        click.option("--teacher", default=None, help="The uncompressed model, when MODEL is already compressed."),
        click.option("--iterations", type=int, default=250, show_default=True, callback=positive_ints),
        click.option("--batch-size", type=int, default=2, show_default=True, callback=positive_ints),
        click.option("--lr", type=float, default=None, callback=finite(0.0, low_open=True),
                     help="AdamW learning rate (the peak, with --schedule poly). Default: 5e-4 when distilling, "
                          "1e-5 (the paper's) for labelled fine-tuning."),
        click.option("--schedule", type=click.Choice(["constant", "poly"]), default=None,
                     help="constant (the paper's recipe) or nnU-Net's poly decay over --iterations. Default: "
                          "poly when distilling, constant for labelled fine-tuning."),
        click.option("--amp", is_flag=True, help="bfloat16 autocast in the forward passes (mixed precision)."),
        click.option("--weight-decay", type=float, default=None, callback=finite(0.0),
                     help="Default: 0 when distilling, 3e-5 (the paper's) for labelled fine-tuning."),
        click.option("--patch", type=int, nargs=3, default=None, callback=positive_ints,
                     help="Training crop (default: the model's patch)."),
        click.option("--checkpoint-every", type=int, default=50, show_default=True, callback=positive_ints),
        click.option("--patience", type=int, default=None, callback=positive_ints,
                     help="Stop after this many checkpoints without improvement on the held-out part."),
        click.option("--val-fraction", type=float, default=0.25, show_default=True, callback=finite(0.0, 0.9),
                     help="Held out for validation: this share of the cases, or of one CT's slices; 0 "
                          "validates on the training data itself (in-sample)."),
        click.option("--temperature", type=float, default=2.0, show_default=True,
                     callback=finite(0.0, low_open=True)),
        click.option("--pseudo-labels", type=float, default=None, callback=finite(0.0),
                     help="Weight of Dice + CE on the teacher's segmentation of unlabelled CTs (with --distill). "
                          "Default: 1."),
        click.option("--augment/--no-augment", default=True, show_default=True,
                     help="With --distill: nnU-Net-style spatial and intensity augmentation of each batch, the "
                          "teacher run on the augmented batch (its outputs then are not cached)."),
        click.option("--init", "init", type=click.Choice(["data", "none"]), default="data", show_default=True,
                     help="data: first fit each Tucker layer to the original layer's outputs on the training "
                          "CTs (closed form); none: start from the factors as decomposed."),
        click.option("--layerwise-init", is_flag=True, hidden=True,
                     help="Deprecated: the data-aware initialisation (--init data) is the default."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
        click.option("--resume", is_flag=True, help="Continue the interrupted run in OUT."),
        click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
                     help="Output folder: model.pt (best, loadable as MODEL), state.pt, report.json."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _recovery_options(kw: dict[str, Any]):
    import torch

    from tuckertrt.training import RecoveryOptions, TrainConfig
    from tuckertrt.training.recovery import recipe

    check_device(kw["device"])
    if kw["layerwise_init"]:
        click.echo("warning: --layerwise-init is deprecated; the data-aware initialisation (--init data) is the "
                   "default", err=True)
    device = kw["device"] if kw["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    defaults = recipe(distill=bool(kw["distill"]))
    given = {k: kw[k] for k in ("lr", "schedule", "weight_decay", "pseudo_labels") if kw[k] is not None}
    settings = {**defaults, **given}
    config = TrainConfig(iterations=kw["iterations"], batch_size=kw["batch_size"], lr=settings["lr"],
                         weight_decay=settings["weight_decay"], checkpoint_every=kw["checkpoint_every"],
                         patience=kw["patience"], seed=kw["seed"], device=device,
                         schedule=settings["schedule"], amp=kw["amp"])
    return RecoveryOptions(config=config, patch=tuple(kw["patch"]) if kw["patch"] else None,
                           temperature=kw["temperature"], pseudo_label_weight=settings["pseudo_labels"],
                           val_fraction=kw["val_fraction"], init=kw["init"], augment=kw["augment"])


def _train_and_report(original, student, kw: dict[str, Any], after_step=None) -> None:
    from tuckertrt.errors import UsageError
    from tuckertrt.training import recover

    if kw["cts"] and not kw["distill"]:
        raise UsageError("CTS are unlabelled: add --distill to use them")
    if kw["distill"] and not (kw["cts"] or kw["dataset"]):
        raise UsageError("--distill needs CTS or --data")
    options = _recovery_options(kw)
    with marked_output(kw["output"]):
        _, report = recover(original, student, kw["output"], dataset=kw["dataset"], cts=kw["cts"],
                            distill=kw["distill"], options=options, resume=kw["resume"], after_step=after_step)
    zero, final = report["zero_shot"], report["recovered"]
    click.echo(f"{report['mode']}: CR {report['compression_ratio']:.2f}, {report['iterations']} iterations in "
               f"{report['seconds']:.0f} s; held out: {', '.join(report['validation_volumes'])} (reference: "
               f"{report['evaluations'][-1]['reference']})")
    for key in ("mean_dice", "mean_nsd", "voxel_agreement", "foreground_agreement"):
        click.echo(f"  {key:<22} zero-shot {zero[key]:.4f}  →  best (it {report['best_iteration']}) {final[key]:.4f}")
    click.echo(f"wrote {Path(kw['output']) / 'model.pt'} and report.json")


def _load_pair(model: str, kw: dict[str, Any], download: bool):
    """(original, compressed-or-None) from MODEL and --teacher."""
    from tuckertrt.decomposition import load_model
    from tuckertrt.errors import UsageError

    loaded = load_model(model, download=download)
    compressed = loaded.is_decomposed or bool(loaded.extra.get("pruning"))
    if not compressed:
        teacher = load_model(kw["teacher"], download=download) if kw["teacher"] else loaded
        return teacher, None, loaded
    if not kw["teacher"]:
        raise UsageError(f"{model} is already compressed: give the uncompressed model with --teacher")
    return load_model(kw["teacher"], download=download), loaded, loaded


@click.command("variance")
@model_argument
@df_option
@min_rank_option
@download_option
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
def variance(model: str, df: float | None, min_rank: int, download: bool, output: str) -> None:
    """Explained variance of every conv kernel over all (rank_in, rank_out): a heatmap per layer, a summary
    plot at the chosen DF (default 0.3), variance.json and the full grids in variance.npz."""
    from tuckertrt.decomposition import load_model
    from tuckertrt.toolkit.variance import layer_variances

    df = df or DEFAULT_VARIANCE_DF
    check_run_folder(output, [model], [])
    loaded = load_model(model, download=download)
    layers = layer_variances(loaded, df, min_rank)
    with marked_output(output):
        _write_variance(loaded, layers, df, min_rank, output)


def _write_variance(loaded, layers, df: float, min_rank: int, output: str) -> None:
    import numpy as np

    from tuckertrt.fileio import atomic_path, ensure_output_dir, write_json_atomic
    from tuckertrt.toolkit import plots

    out = ensure_output_dir(output)
    (out / "layers").mkdir(exist_ok=True)
    for i, layer in enumerate(layers):
        plots.variance_heatmap(layer, df, out / "layers" / f"{i:02d}_{layer.name.replace('.', '_')}.png")
    plots.variance_summary(layers, df, min_rank, out / "summary.png")
    with atomic_path(out / "variance.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{layer.name: layer.grid for layer in layers})
    write_json_atomic(out / "variance.json", {"model": loaded.name, "df": df, "min_rank": min_rank,
                                              "layers": [layer.to_json(min_rank) for layer in layers]})
    worst = min(layers, key=lambda layer: layer.at(*layer.ranks))
    click.echo(f"{len(layers)} layers; explained variance at DF {df}: mean "
               f"{np.mean([layer.at(*layer.ranks) for layer in layers]):.3f}, lowest {worst.at(*worst.ranks):.3f} "
               f"({worst.name}); wrote {out}")


@click.command("finetune")
@model_argument
@df_option
@min_rank_option
@policy_option
@ranks_option
@download_option
@_training_options
def finetune(model: str, df: float | None, min_rank: int, policy: str, ranks_file: str | None, download: bool,
             **kw: Any) -> None:
    """Fine-tune a decomposed MODEL on labelled --data and/or distil the uncompressed model into it on CTS.

    MODEL is decomposed here with --df/--ranks, or is an already compressed model (then give --teacher)."""
    from tuckertrt.decomposition import decompose
    from tuckertrt.decomposition.ranks import rank_spec
    from tuckertrt.errors import UsageError
    from tuckertrt.toolkit.pruning import PruningMasks

    _recovery_options(kw)  # validate the training settings before loading anything
    check_run_folder(kw["output"], [model, kw["teacher"]], [kw["dataset"], *kw["cts"]], ranks_file)
    original, compressed, loaded = _load_pair(model, kw, download)
    if compressed is None:
        if df is None and ranks_file is None:
            raise UsageError("give --df or --ranks (or a compressed MODEL)")
        ranks = rank_spec(ranks_file, loaded.network, min_rank)
        compressed = decompose(loaded, df=df, min_rank=min_rank, policy=policy, ranks=ranks)
    after_step = PruningMasks.from_zeros(compressed).apply if compressed.extra.get("pruning") else None
    _train_and_report(original, compressed, kw, after_step)


@click.command("prune")
@model_argument
@click.option("--amount", type=float, default=None, help="Fraction of channels zeroed per conv.")
@df_option
@click.option("--match-df", type=float, default=None,
              help="Prune to the parameter compression ratio of Tucker at this DF.")
@min_rank_option
@click.option("--channels", type=click.Choice(["in", "out"]), default="in", show_default=True,
              help="Prune input channels (as the paper's code) or output channels.")
@download_option
@_training_options
def prune(model: str, amount: float | None, df: float | None, match_df: float | None, min_rank: int,
          channels: str, download: bool, **kw: Any) -> None:
    """Magnitude-pruning baseline: zero the weakest channels (L2) of every conv (amount = 1 − DF, or matched to
    Tucker's compression), zero-shot; with --data/--distill also fine-tuned by the same loop."""
    from tuckertrt.decomposition.serialize import save_decomposed
    from tuckertrt.errors import UsageError
    from tuckertrt.fileio import ensure_output_dir, write_json_atomic
    from tuckertrt.toolkit.pruning import amount_matching_tucker, prune as prune_model

    if sum(v is not None for v in (amount, df, match_df)) != 1:
        raise UsageError("give exactly one of --amount, --df, --match-df")
    train = bool(kw["dataset"] or kw["cts"] or kw["distill"])
    if train:
        _recovery_options(kw)
    check_run_folder(kw["output"], [model, kw["teacher"]], [kw["dataset"], *kw["cts"]])
    original, compressed, loaded = _load_pair(model, kw, download)
    if compressed is not None:
        raise UsageError(f"{model} is already compressed; prune the original model")
    if match_df is not None:
        amount = amount_matching_tucker(loaded, match_df, min_rank, channels)
    elif df is not None:
        amount = 1 - df
    pruned, masks = prune_model(loaded, amount, channels)
    info = pruned.extra["pruning"]
    click.echo(f"pruned {len(info['layers'])} convs ({channels} channels, amount {amount:.3f}): "
               f"{info['params_original']:,} → {info['params']:,} non-zero parameters (CR "
               f"{info['compression_ratio']:.2f})")
    if train:
        _train_and_report(original, pruned, kw, masks.apply)
        return
    with marked_output(kw["output"]):
        out = ensure_output_dir(kw["output"])
        save_decomposed(pruned, out / "model.pt")
        write_json_atomic(out / "report.json", {"schema": "tuckertrt-prune/1", "model": loaded.name, **info})
    click.echo(f"wrote {out / 'model.pt'}")


@click.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option("--metric", type=click.Choice(["nsd", "dice"]), default="nsd", show_default=True,
              help="Metric of the per-class significance tests.")
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
def report(runs: tuple[str, ...], metric: str, alpha: float, output: str) -> None:
    """Plots (Dice vs compression, Dice per group, latency vs DF), per-class significance tables and a summary
    from the JSON results of finetune/prune (report.json) and bench (bench.json)."""
    from tuckertrt.toolkit.report import build_report

    check_run_folder(output, [], runs)
    with marked_output(output):
        summary = build_report(runs, output, metric, alpha)
    click.echo(json.dumps({"runs": [r["label"] for r in summary["runs"]], "figures": summary["figures"]},
                          indent=1))
