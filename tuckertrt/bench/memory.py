"""Peak resident memory of one patch's inference, measured in a fresh process (nothing else loaded).

    python -m tuckertrt.bench.memory BACKEND ARTIFACT PRECISION [THREADS] [OPTIONS_JSON]

prints the child's peak RSS in bytes after loading the artifact and running one patch: ``VmHWM`` of its own
address space (``ru_maxrss`` would not do: Linux carries the forking parent's high-water mark across exec).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tuckertrt.errors import TuckerTRTError


def isolated_peak_rss(backend: str, artifact: Path, precision: str, threads: int | None = None,
                      options: dict[str, Any] | None = None) -> int:
    """Peak RSS (bytes) of a fresh Python process that loads ``artifact`` on ``backend`` and runs one patch."""
    args = [sys.executable, "-m", "tuckertrt.bench.memory", backend, str(artifact), precision, str(threads or 0),
            json.dumps(options or {})]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TuckerTRTError(f"memory measurement of {artifact} on {backend} failed: {last}")
    return int(done.stdout.strip().splitlines()[-1])


def _main(argv: list[str]) -> None:
    from tuckertrt.backends import open_backend

    backend, artifact, precision, threads, options = argv
    runner = open_backend(backend, artifact, precision=precision, threads=int(threads) or None, **json.loads(options))
    shape = tuple(d if d > 0 else 1 for d in runner.input_shape)
    runner.run(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    print(vm_hwm())


def vm_hwm() -> int:
    """This process's peak resident set size in bytes (Linux ``/proc/self/status`` VmHWM; ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    _main(sys.argv[1:])
