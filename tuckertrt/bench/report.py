"""Markdown tables of a benchmark result, in the form of the paper's Table 2 (speedups, not absolute times)."""
from __future__ import annotations

from typing import Any

from tuckertrt.parity.gate import ParityGate


def markdown(result: dict[str, Any]) -> str:
    configs = result["configs"]
    columns = list(dict.fromkeys(f"{r['backend']} {r['precision']}" for r in configs if "timing" in r))
    variants = [v["key"] for v in result["variants"]]
    lines = [f"Per-patch speedup vs the uncompressed model on the same backend and precision (median of "
             f"{result['rounds']} interleaved rounds; input {tuple(result['patch_shape'])}). In brackets: mean "
             f"Dice vs the uncompressed f32 model on {result['parity_input']} and its worst class"
             f"{', mean Dice vs the reference labels' if result.get('reference_labels') else ''}; ✗ fails the "
             f"parity gate ({ParityGate(**result['gate']).describe()}).", "",
             "| variant | GMACs | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    gmacs = {v["key"]: v["gmacs"] for v in result["variants"]}
    for key in variants:
        cells = [_cell(_find(configs, key, col)) for col in columns]
        lines.append(f"| {key} | {gmacs[key]} | " + " | ".join(cells) + " |")
    base = [f"{col}: {_find(configs, variants[0], col)['timing']['median']:.3f} s" for col in columns
            if _find(configs, variants[0], col)]
    lines += ["", "Uncompressed medians (for scale only): " + "; ".join(base) + "."]
    head = result["headline"]
    if head["speedup"] is not None:
        u, c = head["best_uncompressed"], head["best_compressed"]
        lines += ["", f"**Headline: {head['speedup']:.2f}×** — best compressed passing the gate "
                      f"({c['variant']}, {c['backend']} {c['precision']}, {c['median_s']:.3f} s, Dice "
                      f"{_dice(c)}, agreement {c['agreement']:.4f}) vs best uncompressed passing it "
                      f"({u['variant']}, {u['backend']} {u['precision']}, {u['median_s']:.3f} s)."]
        if "isolated_peak_rss_mb" in c:
            lines.append(f"Peak RSS of one patch in a fresh process: compressed {c['isolated_peak_rss_mb']} MB, "
                         f"uncompressed {u.get('isolated_peak_rss_mb', '—')} MB.")
    elif head["best_uncompressed"] is not None:
        u = head["best_uncompressed"]
        best = max((r for r in configs if r["compressed"]), key=lambda r: r["dice"] or 0, default=None)
        closest = f" (closest: {best['variant']}, {best['backend']} {best['precision']}, Dice {_dice(best)})" \
            if best else ""
        lines += ["", f"**Headline: no compressed configuration passes the gate**{closest}; best uncompressed "
                      f"passing it: {u['variant']}, {u['backend']} {u['precision']}, {u['median_s']:.3f} s."]
    for backend, why in result.get("skipped", {}).items():
        lines.append(f"\n{backend}: not run ({why}).")
    return "\n".join(lines) + "\n"


def profile_markdown(result: dict[str, Any], top: int = 8) -> str:
    """Per configuration: seconds by node type (top ``top``) from the runtime's own profiler."""
    lines = []
    for r in result["configs"]:
        profile = r.get("profile")
        if not profile:
            continue
        lines += [f"### {r['variant']} — {r['backend']} {r['precision']} (profiled total "
                  f"{profile['total_seconds']:.3f} s)", "", "| node type | seconds | nodes |", "|---|---|---|"]
        for kind, v in list(profile["by_type"].items())[:top]:
            lines.append(f"| {kind} | {v['seconds']:.4f} | {v['nodes']} |")
        lines.append("")
    return "\n".join(lines)


def _find(configs: list[dict[str, Any]], variant: str, column: str) -> dict[str, Any] | None:
    return next((r for r in configs if r["variant"] == variant and "timing" in r
                 and f"{r['backend']} {r['precision']}" == column), None)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    if "speedup" not in row:
        return "—"
    labels = "" if row.get("dice_labels") is None else f"; labels {row['dice_labels']:.3f}"
    return f"{row['speedup']:.2f}× ({_dice(row)}{labels}{'' if row['passes_gate'] else ' ✗'})"


def _dice(row: dict[str, Any]) -> str:
    """Mean Dice (worst class) of a row."""
    return "—" if row["dice"] is None else f"{row['dice']:.3f}, worst {row['worst_class_dice']:.2f}"
