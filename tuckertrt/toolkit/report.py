"""``tuckertrt report``: plots, statistics and a markdown summary from earlier JSON results.

Inputs (files, or folders holding ``report.json``/``bench.json``):

* ``tuckertrt-eval/1`` records — ``{"schema", "model", "method": original|tucker|pruning, "stage":
  original|zero-shot|fine-tuned|distilled, "df", "pruning_amount", "params", "params_original",
  "compression_ratio", "reference": labels|teacher, "mean_dice", "mean_nsd", "cases": {case: {"dice":
  {class: v}, "nsd": {class: v}}}}`` — alone or as the ``evaluations`` list of a ``finetune``/``prune`` report;
* ``bench.json`` of ``tuckertrt bench`` — its ``configs`` rows with ``df``, ``backend``, ``precision`` and
  ``timing`` (``median``/``minimum``/``maximum`` seconds).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import ensure_output_dir, read_json, write_bytes_atomic, write_json_atomic
from tuckertrt.toolkit import plots
from tuckertrt.toolkit.statistics import compare_classes

EVAL_SCHEMA = "tuckertrt-eval/1"
RESULT_FILES = ("report.json", "bench.json")


def read_results(paths: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(evaluation records, latency rows) from result files/folders; duplicates (the same original scored in
    several runs) are kept once."""
    records, latency, seen = [], [], set()
    for path in map(Path, paths):
        files = [path / n for n in RESULT_FILES if (path / n).is_file()] if path.is_dir() else [path]
        if not files:
            raise TuckerTRTError(f"{path} holds no {' or '.join(RESULT_FILES)}")
        for f in files:
            doc = read_json(f, "result file")
            found_records = _records(doc)
            rows = [dict(r, df=r.get("df") or 1.0) for r in doc.get("configs", []) if "timing" in r] \
                if isinstance(doc, dict) else []
            if not found_records and not rows:
                raise TuckerTRTError(f"{f} is neither an evaluation ({EVAL_SCHEMA}) nor a bench result")
            for r in found_records:
                key = (r["model"], r["method"], r["stage"], r.get("df"), r.get("pruning_amount"), r.get("reference"))
                if key not in seen:
                    seen.add(key)
                    records.append(r)
            latency.extend(rows)
    return records, latency


def _records(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    if doc.get("schema") == EVAL_SCHEMA:
        return [doc]
    return [r for r in doc.get("evaluations", []) if isinstance(r, dict) and r.get("schema") == EVAL_SCHEMA]


def run_label(record: dict[str, Any]) -> str:
    versus = f"vs {record.get('reference')}"
    if record["method"] == "original":
        return f"original {versus}"
    setting = (f"DF {record['df']}" if record["method"] == "tucker"
               else f"amount {record.get('pruning_amount', 0):.2f}")
    return f"{record['method']} {setting} {record['stage']} (CR {record['compression_ratio']:.1f}) {versus}"


def class_means(record: dict[str, Any], metric: str = "dice") -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for case in record.get("cases", {}).values():
        for name, v in case.get(metric, {}).items():
            values.setdefault(name, []).append(v)
    return {k: float(np.mean(v)) for k, v in values.items()}


def group_means(record: dict[str, Any]) -> dict[str, float]:
    """Mean Dice per TotalSegmentator group (classes matched by name; others in "other")."""
    from tuckertrt.models.presets import ts_total_classes
    from tuckertrt.parity.metrics import group_of

    ids = {name: i for i, name in ts_total_classes().items()}
    groups: dict[str, list[float]] = {}
    for name, v in class_means(record).items():
        group = group_of(ids[name], True) if name in ids else "other"
        groups.setdefault(group, []).append(v)
    return {g: float(np.mean(v)) for g, v in groups.items()}


def significance_tables(records: Sequence[dict[str, Any]], metric: str, alpha: float) -> list[dict[str, Any]]:
    """For each original record, every compressed record of the same model and reference tested against it."""
    tables = []
    for base in (r for r in records if r["method"] == "original"):
        others = [r for r in records if r is not base and r["method"] != "original"
                  and r["model"] == base["model"] and r.get("reference") == base.get("reference")]
        if others:
            tables.append({"model": base["model"], "reference": base.get("reference"), "metric": metric,
                           "columns": {run_label(r): [t.to_json() for t in compare_classes(
                               base["cases"], r["cases"], metric, alpha)] for r in others}})
    return tables


def markdown(records: Sequence[dict[str, Any]], tables: Sequence[dict[str, Any]], figures: Sequence[str],
             alpha: float) -> str:
    lines = ["# Compression report", "", "| run | reference | params | CR | mean Dice | mean NSD |",
             "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["compression_ratio"], r["method"], r["stage"])):
        lines.append(f"| {run_label(r)} | {r.get('reference')} | {r['params']:,} | {r['compression_ratio']:.2f} | "
                     f"{_fmt(r.get('mean_dice'))} | {_fmt(r.get('mean_nsd'))} |")
    for t in tables:
        columns = list(t["columns"])
        n_cases = max((row["n_cases"] for rows in t["columns"].values() for row in rows), default=0)
        lines += ["", f"## Per-class change in {t['metric'].upper()} vs the original ({t['model']}, reference: "
                      f"{t['reference']}, {n_cases} cases)", "",
                  f"Cell: mean change (compressed − original), Holm-corrected p of a paired Wilcoxon signed-rank "
                  f"test across cases; **bold ▼** = significant degradation (p < {alpha}).", "",
                  "| class | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        by_class: dict[str, dict[str, dict[str, Any]]] = {}
        for col, rows in t["columns"].items():
            for row in rows:
                by_class.setdefault(row["name"], {})[col] = row
        for name in sorted(by_class):
            lines.append(f"| {name} | " + " | ".join(_cell(by_class[name].get(c)) for c in columns) + " |")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    text = f"{row['mean_compressed'] - row['mean_baseline']:+.3f} (p={_fmt_p(row['p_holm'])})"
    return f"**{text} ▼**" if row["degraded"] else text


def _fmt_p(p: float) -> str:
    return "n/a" if p != p else f"{p:.2g}"


def build_report(paths: Sequence[str | Path], out_dir: str | Path, metric: str = "nsd",
                 alpha: float = 0.05) -> dict[str, Any]:
    """Write the figures, ``report.md`` and ``summary.json`` into ``out_dir``; return the JSON summary."""
    records, latency = read_results(paths)
    out = ensure_output_dir(out_dir)
    figures = []
    if records:
        figures.append(str(plots.dice_vs_compression(records, out / "dice_vs_compression.png")))
        groups = {run_label(r): group_means(r) for r in records}
        figures.append(str(plots.group_bars(groups, out / "dice_per_group.png")))
    if latency:
        figures.append(str(plots.latency_vs_df(latency, out / "latency_vs_df.png")))
    tables = significance_tables(records, metric, alpha)
    write_bytes_atomic(out / "report.md", markdown(records, tables, figures, alpha).encode())
    summary = {"runs": [{"label": run_label(r), **{k: r.get(k) for k in (
        "model", "method", "stage", "df", "pruning_amount", "params", "compression_ratio", "reference",
        "mean_dice", "mean_nsd")}, "groups": group_means(r)} for r in records],
        "latency_rows": len(latency), "significance": tables, "figures": figures}
    write_json_atomic(out / "summary.json", summary)
    return summary
