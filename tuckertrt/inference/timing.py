"""Interleaved timing rounds, so that configurations are compared under the same load."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable


@dataclass
class Timing:
    """Per-patch latency of one configuration over the timed rounds (seconds)."""

    median: float
    minimum: float
    maximum: float
    rounds: list[float]

    @property
    def spread(self) -> float:
        """(max − min) / median: how noisy the rounds were."""
        return (self.maximum - self.minimum) / self.median if self.median else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "spread": round(self.spread, 4)}


def interleaved(runners: dict[str, Callable[[], Any]], rounds: int = 3, warmup: int = 1) -> dict[str, Timing]:
    """Run every runner ``warmup`` times, then ``rounds`` rounds in which each runs once, in turn."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            samples[key].append(time.perf_counter() - start)
    return {key: Timing(statistics.median(s), min(s), max(s), s) for key, s in samples.items()}
