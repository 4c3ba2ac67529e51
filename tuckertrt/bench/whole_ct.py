"""Whole-CT segmentation timed stage by stage, with its peak memory, in a fresh process.

    python -m tuckertrt.bench.whole_ct CT MODEL BACKEND ARTIFACTS PRECISION OUT [THREADS]

runs what ``tuckertrt segment CT -o OUT --model MODEL --backend BACKEND --artifacts ARTIFACTS --precision
PRECISION`` runs (read, resample, sliding window, back to the input grid, write) and prints one JSON line: the
seconds of each stage, the network's share, and the process's peak RSS (``VmHWM``). BACKEND ``auto`` runs what
``tuckertrt segment CT -o OUT --model MODEL`` runs by default, with ARTIFACTS its cache folder (``-``: the default
one) and PRECISION ignored; its first use exports and measures (counted in ``load_seconds``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tuckertrt.backends.registry import AUTO
from tuckertrt.bench.memory import vm_hwm
from tuckertrt.errors import TuckerTRTError
from tuckertrt.bench.auto_backend import open_auto


@dataclass
class WholeCTRun:
    """One whole-CT segmentation: ``seconds`` from reading the CT to the written labels (model loading apart)."""

    ct: str
    shape: list[int]
    backend: str
    precision: str
    artifacts: str
    load_seconds: float
    seconds: float
    stages: dict[str, float]
    tiles: int
    peak_rss: int

    @property
    def network_seconds(self) -> float:
        return self.stages.get("network", 0.0)

    @property
    def non_network_share(self) -> float:
        return 1.0 - self.network_seconds / self.seconds if self.seconds > 0 else 0.0


def run_whole_ct(ct: str | Path, model: str, backend: str, artifacts: str | Path, precision: str,
                 out: str | Path, threads: int | None = None) -> WholeCTRun:
    """Load ``model``'s artifact like ``tuckertrt segment`` does, then segment ``ct`` into ``out`` (a .nii.gz)."""
    from tuckertrt.backends import open_backend
    from tuckertrt.decomposition import load_model
    from tuckertrt.inference.segment import Runner, segment_volume

    start = time.perf_counter()
    loaded_model = load_model(model)
    if backend == AUTO:
        auto = open_auto(loaded_model, None if str(artifacts) == "-" else artifacts, threads=threads)
        runner = auto.runner
        precision = f"{auto.choice.backend} {auto.choice.precision}"
    else:
        runner = Runner(loaded_model.spec, open_backend(backend, artifacts, precision, threads=threads, head="auto"))
    loaded = time.perf_counter()
    result = segment_volume(ct, runner)
    written = time.perf_counter()
    result.save(out)
    done = time.perf_counter()
    stages = {**result.stages, "write": done - written}
    return WholeCTRun(str(ct), list(result.labels.shape), backend,
                      precision if backend == AUTO else runner.describe().get("precision", precision),
                      str(artifacts), loaded - start, done - loaded, stages, result.tiles, vm_hwm())


def isolated_whole_ct(ct: str | Path, model: str, backend: str, artifacts: str | Path, precision: str,
                      out: str | Path, threads: int | None = None) -> WholeCTRun:
    """:func:`run_whole_ct` in a fresh Python process (so its peak RSS is this run's alone)."""
    args = [sys.executable, "-m", "tuckertrt.bench.whole_ct", str(ct), model, backend, str(artifacts), precision,
            str(out), str(threads or 0)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TuckerTRTError(f"whole-CT run of {ct} on {backend} failed: {last}")
    return WholeCTRun(**json.loads(done.stdout.strip().splitlines()[-1]))


def _main(argv: list[str]) -> None:
    ct, model, backend, artifacts, precision, out, *threads = argv
    threads_n = int(threads[0]) if threads else 0
    print(json.dumps(asdict(run_whole_ct(ct, model, backend, artifacts, precision, out, threads_n or None))))


if __name__ == "__main__":
    _main(sys.argv[1:])
