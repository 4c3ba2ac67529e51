"""The build report: ``report.json`` (everything), ``report.md`` (for humans and CI logs) and plots."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tuckertrt.fileio import atomic_path, write_bytes_atomic, write_json_atomic


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_json_atomic(out / "report.json", report)
    plots = _plots(out / "plots", report)
    write_bytes_atomic(out / "report.md", markdown(report, plots).encode())


def _setting(report: dict[str, Any]) -> str:
    """How the ranks were chosen, for titles: "DF 0.3", "auto ranks (macs 0.9)", "ranks from a file"."""
    if report.get("auto_ranks"):
        return "auto ranks (" + ", ".join(f"{k} {v:g}" for k, v in report["auto_ranks"]["target"].items()) + ")"
    return f"DF {report['df']:g}" if report.get("df") is not None else "ranks from a file"


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.4f}"


def markdown(report: dict[str, Any], plots: list[str] = ()) -> str:
    c, g, b = report["compression"], report["gates"], report["backend"]
    lines = [
        f"# tuckertrt build: {report['model']} at {_setting(report)}",
        "",
        f"**Parity gates {'PASSED' if g['passed'] else 'FAILED'}**: mean Dice vs the uncompressed model "
        f"{g['mean_dice']:.4f} (gate ≥ {g['min_dice']}), worst class {g['worst_class']['name']} "
        f"{g['worst_class']['dice']:.4f} (gate ≥ {g['min_class_dice']}).",
        "",
        "| | uncompressed | compressed | ratio |",
        "|---|---|---|---|",
        f"| parameters | {c['params_original'] / 1e6:.3f} M | {c['params'] / 1e6:.3f} M | "
        f"{c['compression_ratio']:.2f}× |",
        f"| multiply-accumulates / patch | {c['gmacs_original']:.2f} G | {c['gmacs']:.2f} G | {c['mac_ratio']:.2f}× |",
        f"| latency / patch ({b['name']} {b['precision']}) | {report['patch_latency']['original']['median']:.3f} s | "
        f"{report['patch_latency']['compressed']['median']:.3f} s | {report['patch_speedup']:.2f}× |",
        f"| whole-CT segmentation (median over cases) | | | {report['volume_speedup']:.2f}× |",
        "",
    ]
    if report.get("levers"):
        lines += ["## What would help", ""] + [f"- {lever}" for lever in report["levers"]] + [""]
    if report.get("auto_ranks"):
        a = report["auto_ranks"]
        lines += [f"Ranks chosen by --ranks auto for {a['target']}: {a['mac_fraction']:.2f} of the original's "
                  f"multiply-accumulates, predicted layer error {a['predicted_error']:.3f}"
                  + "".join(f"; measured {r['speedup']:.2f}× at {r['mac_fraction']:.2f}" for r in a["rounds"])
                  + f" (target {'met' if a['met'] else 'not met'}; ranks.json).", ""]
    if b.get("choice"):
        lines += [f"Backend: {b['name']} {b['precision']}: {b['choice']['reason']}.", ""]
    lines += ["## Cases", "", "| case | held out | model | Dice vs uncompressed | NSD | voxel agreement | "
              "foreground agreement | Dice vs reference | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for case in report["cases"]:
        for name, seconds in case["seconds"].items():
            p = case["parity"].get(name)
            ref = case["vs_reference"].get(name)
            lines.append(f"| {case['case']} | {'yes' if case.get('held_out') else 'no'} | {name} | "
                         f"{_num(p['mean_dice']) if p else '1 (itself)'} | "
                         f"{_num(p['mean_nsd']) if p else '–'} | {_pct(p['voxel_agreement']) if p else '–'} | "
                         f"{_pct(p['foreground_agreement']) if p else '–'} | "
                         f"{_num(ref['mean_dice']) if ref else '–'} | {seconds:.1f} |")
    seen = {Path(p).resolve() for p in report.get("distilled_on", [])}
    if any(Path(c["source"]).resolve() in seen for c in report["cases"]):
        lines += ["", "The distillation trained on parts of a validation CT above: for data it never saw, read the "
                      "held-out figures under Distillation."]
    groups = report["cases"][0]["parity"]["compressed"].get("groups", {}) if report["cases"] else {}
    if groups:
        lines += ["", "Per group (first case): " + ", ".join(
            f"{k} Dice {v['dice']:.3f} ({v['n_classes']} classes)" for k, v in groups.items())]
    if report.get("distillation"):
        lines += ["", "## Distillation (held-out part of the distillation CTs, vs the uncompressed model)", ""]
        lines += _distillation_table(report["distillation"])
    skipped = report["engines"].get("skipped", {})
    built = [k for k in report["engines"] if k != "skipped"]
    lines += ["", "## Engines", ""] + [f"- built {k}" for k in built] + [f"- skipped {k}: {v}" for k, v in
                                                                         skipped.items()]
    lines += ["", "## Graph checks (polygraphy)", ""]
    for model_name, comparisons in report["export_comparisons"].items():
        for name, comp in comparisons.items():
            lines.append(f"- {model_name} {name}: {'pass' if comp.get('passed', True) else 'FAIL'}"
                         + (f", max abs {comp['stats']['max_abs']:.2e}, argmax agreement "
                            f"{_pct(comp['stats']['argmax_agreement'])}" if "stats" in comp else ""))
    lines += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _distillation_table(d: dict[str, Any]) -> list[str]:
    zero, final = d.get("zero_shot") or {}, d.get("recovered") or {}
    rows = [f"{d.get('held_out', '')}; {d.get('iterations')} iterations in {d.get('seconds', 0):.0f} s "
            f"(best at {d.get('best_iteration')}).", "", "| | zero-shot | distilled |", "|---|---|---|"]
    for key in ("mean_dice", "mean_nsd", "voxel_agreement", "foreground_agreement"):
        fmt = _pct if "agreement" in key else _num
        rows.append(f"| {key.replace('_', ' ')} | {fmt(zero.get(key))} | {fmt(final.get(key))} |")
    return rows


def _plots(folder: Path, report: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if report["cases"]:
        classes = report["cases"][0]["parity"]["compressed"]["classes"]
        fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(classes)), 4))
        ax.bar([c["name"] for c in classes], [c["dice"] for c in classes], color="tab:blue")
        ax.axhline(report["gates"]["min_class_dice"], color="tab:red", ls="--", lw=1, label="class gate")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("Dice vs uncompressed")
        ax.set_title(f"{report['model']} {_setting(report)}: per-class parity ({report['cases'][0]['case']})")
        ax.tick_params(axis="x", rotation=90, labelsize=6)
        ax.legend(loc="lower right")
        written.append(_save(fig, folder / "dice_per_class.png"))
    lat = report["patch_latency"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    names = list(lat)
    ax.bar(names, [lat[n]["median"] for n in names], yerr=[[lat[n]["median"] - lat[n]["minimum"] for n in names],
                                                         [lat[n]["maximum"] - lat[n]["median"] for n in names]],
           color=["tab:gray", "tab:green"][: len(names)], capsize=4)
    ax.set_ylabel("seconds per patch (median, min–max)")
    ax.set_title(f"{report['backend']['name']} {report['backend']['precision']}: {report['patch_speedup']:.2f}×")
    written.append(_save(fig, folder / "latency.png"))
    plt.close("all")
    return [f"plots/{Path(p).name}" for p in written]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
