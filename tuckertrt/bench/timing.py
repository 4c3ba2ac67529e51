"""Peak-memory sampling beside the interleaved timing rounds (:mod:`tuckertrt.inference.timing`)."""
from __future__ import annotations

import threading

import psutil

from tuckertrt.inference.timing import Timing, interleaved  # noqa: F401  (re-exported: bench's timing API)


class PeakRss:
    """Samples this process's resident set size in a thread; ``peak`` is the highest value seen (bytes)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = self.start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRss":
        self.start = self.peak = self.process.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)
