#!/usr/bin/env python
"""Cases per minute for a cohort of copies of one CT, four ways, measured side by side in one run:

  process   a new ``tuckertrt segment`` process per case (start-up and model load paid per case)
  ray-1     ``segment DIR --ray --workers 1`` (a local Ray started for the run; one actor, model loaded once)
  ray-2     ``segment DIR --ray --workers 2`` (two actors, the CPUs split between them)
  serve     ``segment DIR --server URL --concurrency C`` against a running ``tuckertrt serve``

Each row's time is the whole command, from launch to exit (Ray's start-up included); the serve row excludes the
server's own start-up, printed separately. All on loopback.

    python benchmarks/cohort_throughput.py [--ct CT] [--copies 8] [--model fixture-3mm] [--clients 2] [--backend B]

Every mode runs ``--backend B`` when given, else the commands' default (auto: its cache entry is made before the
first row, so that no row pays the export).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuckertrt.serving.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SHARED_SM = ROOT.parent / "shared" / "data" / "totalsegmentator-examples" / "example_ct_sm.nii.gz"


def tuckertrt(*args: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tuckertrt", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tuckertrt {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=SHARED_SM if SHARED_SM.exists() else
                        ROOT / "tuckertrt" / "data" / "examples" / "example_ct.nii.gz")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--model", default="fixture-3mm")
    parser.add_argument("--clients", type=int, default=2, help="--concurrency of the serve row")
    parser.add_argument("--modes", default="process,ray-1,ray-2,serve")
    parser.add_argument("--backend", default=None, help="--backend of every mode (default: the commands' own)")
    args = parser.parse_args()
    backend = ("--backend", args.backend) if args.backend else ()
    cpus = os.cpu_count() or 1
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cohort-bench-") as tmp:
        cohort = Path(tmp) / "cohort"
        cohort.mkdir()
        for i in range(args.copies):
            shutil.copyfile(args.ct, cohort / f"case{i:02d}.nii.gz")
        if args.backend in (None, "auto"):
            warm = tuckertrt("segment", str(args.ct), "-o", str(Path(tmp) / "warm"), "--model", args.model)
            print(f"auto: cache entry ready ({warm:.1f} s, one segment run)")
        for mode in args.modes.split(","):
            out = Path(tmp) / f"out-{mode}"
            if mode == "process":
                rows[mode] = sum(tuckertrt("segment", str(case), "-o", str(out / case.name), "--model", args.model,
                                           *backend) for case in sorted(cohort.iterdir()))
            elif mode.startswith("ray-"):
                workers = int(mode[4:])
                rows[mode] = tuckertrt("segment", str(cohort), "-o", str(out), "--model", args.model, "--ray",
                                       "--workers", str(workers), "--threads-per-worker",
                                       str(max(1, cpus // workers)), *backend)
            elif mode == "serve":
                server = ServerProcess(args.model, Path(tmp) / "serve.log", backend)
                try:
                    print(f"serve: ready {server.start_seconds:.1f} s after launch (model loaded once)")
                    rows[f"serve-{args.clients}c"] = tuckertrt("segment", str(cohort), "-o", str(out), "--server",
                                                               server.url, "--concurrency", str(args.clients))
                finally:
                    server.stop()
            print(f"{mode}: done", flush=True)
    base = rows.get("process")
    print(f"\n{args.copies} copies of {args.ct.name}, model {args.model}, {cpus} CPUs")
    print(f"{'mode':<12} {'seconds':>8} {'cases/min':>10} {'vs process':>11}")
    for mode, seconds in rows.items():
        ratio = f"{base / seconds:.2f}x" if base else "-"
        print(f"{mode:<12} {seconds:8.1f} {args.copies / seconds * 60:10.2f} {ratio:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
