"""The paper's figures with matplotlib (Agg, files only): explained-variance maps (App. B), Dice vs compression
ratio (Fig. 2), per-group Dice (Fig. 5) and latency vs DF (Fig. 6)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tuckertrt.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def variance_heatmap(layer, df: float, path: Path) -> Path:
    """Retained variance over (r_in, r_out), contours at 0.9/0.99, the chosen DF's ranks marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    extent = (0.5, layer.in_channels + 0.5, 0.5, layer.out_channels + 0.5)
    im = ax.imshow(layer.grid, origin="lower", extent=extent, aspect="auto", vmin=0, vmax=1, cmap="viridis")
    if min(layer.grid.shape) > 1:
        r_in, r_out = np.arange(1, layer.in_channels + 1), np.arange(1, layer.out_channels + 1)
        cs = ax.contour(r_in, r_out, layer.grid, levels=[0.9, 0.99], colors="white", linewidths=0.8)
        ax.clabel(cs, fmt="%.2f", fontsize=7)
    ax.plot(*layer.ranks, "r+", markersize=12, mew=2, label=f"DF {df}: {layer.at(*layer.ranks):.3f}")
    ax.set(xlabel="rank in", ylabel="rank out", title=f"{layer.name}\n{layer.kind} {layer.in_channels}→"
                                                     f"{layer.out_channels}, k={'×'.join(map(str, layer.kernel))}")
    ax.title.set_fontsize(8)
    ax.legend(loc="lower right", fontsize=7)
    fig.colorbar(im, ax=ax, label="explained variance")
    return _save(fig, path)


def variance_summary(layers: Sequence, df: float, min_rank: int, path: Path) -> Path:
    """Retained variance per layer (network order) at the chosen DF, with a few other DFs as lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(layers)), 4))
    x = np.arange(len(layers))
    ax.bar(x, [layer.at(*layer.ranks) for layer in layers], color="tab:blue", alpha=0.7, label=f"DF {df}")
    for other in (0.1, 0.3, 0.5, 0.7):
        if other != df:
            ax.plot(x, [layer.at_df(other, min_rank) for layer in layers], ".-", lw=0.8, label=f"DF {other}")
    ax.set_xticks(x, [layer.name for layer in layers], rotation=90, fontsize=6)
    ax.set(ylabel="explained variance", ylim=(0, 1.02), title="Retained kernel variance per layer")
    ax.legend(fontsize=7, ncol=5, loc="lower left")
    return _save(fig, path)


def dice_vs_compression(records: Sequence[dict[str, Any]], path: Path, metric: str = "mean_dice") -> Path:
    """Fig. 2: mean Dice vs compression ratio, one line per (method, stage, reference); the original as a dashed
    line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[tuple[float, float]]] = {}
    dashes = iter(["--", ":", "-."] * len(records))
    for r in records:
        if r.get(metric) is None:
            continue
        if r["method"] == "original":
            ax.axhline(r[metric], color="gray", ls=next(dashes), lw=1, label=f"original (vs {r['reference']})")
            continue
        series.setdefault(f"{r['method']} {r['stage']} (vs {r['reference']})", []).append(
            (r["compression_ratio"], r[metric]))
    styles = {"tucker": "o-", "pruning": "s--"}
    for label, points in sorted(series.items()):
        cr, value = zip(*sorted(points))
        ax.plot(cr, value, styles.get(label.split()[0], "^-"), label=label)
    ax.set_xscale("log")
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(ScalarFormatter())
    ax.set(xlabel="compression ratio (parameters, log scale)", ylabel=metric.replace("_", " "),
           title="Segmentation quality vs compression", ylim=(-0.02, 1.05))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return _save(fig, path)


def group_bars(groups: dict[str, dict[str, float]], path: Path) -> Path:
    """Fig. 5: per anatomical group mean Dice, one bar per run."""
    plt = _pyplot()
    names = list(dict.fromkeys(g for per_run in groups.values() for g in per_run))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / max(1, len(groups))
    for i, (run, per_group) in enumerate(groups.items()):
        x = np.arange(len(names)) + (i - (len(groups) - 1) / 2) * width
        ax.bar(x, [per_group.get(g, np.nan) for g in names], width, label=run)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set(ylabel="mean Dice", ylim=(0, 1.05), title="Dice per anatomical group")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def latency_vs_df(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Fig. 6: per-patch latency (median, min–max bars) vs DF, one line per backend and precision."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in rows:
        t = r["timing"]
        series.setdefault(f"{r['backend']} {r['precision']}", []).append(
            (r["df"], t["median"] * 1e3, t["minimum"] * 1e3, t["maximum"] * 1e3))
    for label, points in sorted(series.items()):
        df, med, lo, hi = (np.array(v) for v in zip(*sorted(points)))
        ax.errorbar(df, med, yerr=[med - lo, hi - med], fmt="o-", capsize=3, label=label)
    ax.set(xlabel="decomposition factor (1 = uncompressed)", ylabel="latency per patch (ms)",
           title="Latency vs decomposition factor")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
