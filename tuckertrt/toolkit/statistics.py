"""Does compression degrade a class significantly? Paired Wilcoxon signed-rank tests across cases, one per
class, Holm-corrected across the classes of one comparison (the paper fitted a mixed model instead; this is
the distribution-free check that needs nothing beyond scipy)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class ClassTest:
    name: str
    n_cases: int
    mean_baseline: float
    mean_compressed: float
    median_difference: float  # compressed − baseline
    p_value: float
    p_holm: float
    degraded: bool  # significantly worse after Holm correction

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    valid = [(p, i) for i, p in enumerate(p_values) if not np.isnan(p)]
    m = len(valid)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_p_value(baseline: np.ndarray, compressed: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; 1 when every difference is zero, NaN with under two cases."""
    from scipy.stats import wilcoxon

    if len(baseline) < 2:
        return float("nan")
    diff = compressed - baseline
    if np.allclose(diff, 0):
        return 1.0
    return float(wilcoxon(compressed, baseline, zero_method="wilcox", alternative="two-sided").pvalue)


Cases = dict[str, dict[str, dict[str, float]]]  # {case: {metric: {class: value}}}


def compare_classes(baseline: Cases, compressed: Cases, metric: str = "nsd", alpha: float = 0.05
                    ) -> list[ClassTest]:
    """Per class, over the cases both records scored: ``{case: {metric: {class: value}}}`` each."""
    cases = [c for c in baseline if c in compressed]
    classes = sorted({k for c in cases for k in baseline[c].get(metric, {}) if k in compressed[c].get(metric, {})})
    rows = []
    for name in classes:
        paired = [(baseline[c][metric][name], compressed[c][metric][name]) for c in cases
                  if name in baseline[c][metric] and name in compressed[c][metric]]
        b, x = (np.array(v, dtype=float) for v in zip(*paired))
        rows.append((name, b, x, paired_p_value(b, x)))
    adjusted = holm([r[3] for r in rows])
    return [ClassTest(name, len(b), float(b.mean()), float(x.mean()), float(np.median(x - b)), p, q,
                      bool(q < alpha and x.mean() < b.mean()))
            for (name, b, x, p), q in zip(rows, adjusted)]
