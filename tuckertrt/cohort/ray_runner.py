"""Segment a cohort on Ray: one actor per worker loads the model once and segments case after case; Ray places
the actors on the cluster's machines. Resumable (complete cases are kept), a bad case is recorded and the run
goes on."""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from tuckertrt.cohort.records import (SUMMARY_NAME, CaseRecord, CohortSummary, complete_record, hash_outputs,
                                      write_record)
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.fileio import ensure_output_dir
from tuckertrt.inference.io import is_nifti
from tuckertrt.inference.segment import DEFAULT_TILE_STEP
from tuckertrt.inference.segmenter import RunnerLoader, Segmenter, plan_case_outputs


@dataclass
class CohortOptions:
    address: str | None = None  # None: a local Ray started for the run; "auto" or host:port: a running cluster
    workers: int = 1
    threads_per_worker: int | None = None  # default: this machine's CPUs shared among the workers
    tile_step: float = DEFAULT_TILE_STEP
    masks: bool = False
    progress: bool = True

    def worker_threads(self) -> int:
        """``threads_per_worker``, else this machine's CPUs shared among the workers."""
        return self.threads_per_worker or max(1, (os.cpu_count() or 1) // self.workers)


class CaseWorker:
    """A Ray actor: the model, loaded once with ``threads`` CPU threads, then one case per call."""

    def __init__(self, loader: RunnerLoader, tile_step: float, threads: int, out_dir: str):
        import torch

        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        torch.set_num_threads(threads)
        self.segmenter = Segmenter.load(loader, tile_step)
        self.out_dir = Path(out_dir)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def segment(self, case: str, source: str, labels: str, masks: bool) -> dict[str, Any]:
        start = time.perf_counter()
        record = CaseRecord(case, source, "done", worker=self.name)
        try:
            result, written = self.segmenter.segment_to(source, Path(labels), masks)
            record.segment_seconds, record.tiles = round(result.seconds, 3), result.tiles
            record.outputs = hash_outputs(written, self.out_dir)
        except (TuckerTRTError, OSError, MemoryError) as e:
            record.status, record.error = "failed", str(e) or type(e).__name__
        record.seconds = round(time.perf_counter() - start, 3)
        if record.status == "done":
            write_record(self.out_dir, record)  # the case is complete from here on
        return asdict(record)


def run_cohort(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, loader: RunnerLoader,
               options: CohortOptions) -> CohortSummary:
    """Segment ``inputs`` into the folder ``out_dir`` on Ray. Cases whose outputs are complete (record and
    hashes) are kept; the others are segmented; every case's status and timings go to ``cohort_summary.json``."""
    try:
        import ray
    except ImportError:
        raise TuckerTRTError("--ray needs Ray: pip install 'tuckertrt[ray]'") from None
    inputs, out_dir = [Path(i) for i in inputs], Path(out_dir)
    plan = cohort_plan(inputs, out_dir, options.masks)
    ensure_output_dir(out_dir)
    threads = options.worker_threads()
    summary = CohortSummary(out_dir / SUMMARY_NAME, {**asdict(options), "threads_per_worker": threads,
                                                     "inputs": len(inputs)})
    todo = deque()
    for source, dest in zip(inputs, plan):
        kept = complete_record(out_dir, dest.case, [dest.labels, dest.sidecar])
        if kept:
            kept.status = "kept"
            summary.cases[dest.case] = kept
        else:
            todo.append((dest.case, str(source.resolve()), str(dest.labels.resolve())))
    logging.getLogger("tuckertrt.cohort").info("%d cases: %d complete already, %d to segment", len(inputs),
                                               len(inputs) - len(todo), len(todo))
    start = time.perf_counter()
    if todo:
        started_here = _connect(ray, options, threads)
        try:
            _run(ray, todo, summary, loader, options, threads, out_dir)
        finally:
            if started_here:
                ray.shutdown()
    summary.seconds = time.perf_counter() - start
    summary.save()
    return summary


def cohort_plan(inputs: Sequence[Path], out_dir: Path, masks: bool) -> list:
    """Where each case's outputs go in the folder ``out_dir``, refused before any work if they would overwrite
    something tuckertrt did not write."""
    if is_nifti(out_dir):
        raise UsageError(f"a Ray cohort writes a folder of cases, not the file {out_dir}")
    return plan_case_outputs(list(inputs), out_dir, masks)


def _connect(ray: Any, options: CohortOptions, threads: int) -> bool:
    """Start a local Ray (its CPUs: this machine's) or join a cluster; False if Ray was already initialised."""
    if ray.is_initialized():
        return False
    if options.address is None:
        cpus = os.cpu_count() or 1
        if options.workers * threads > cpus:
            raise UsageError(f"{options.workers} workers x {threads} threads need {options.workers * threads} CPUs; "
                             f"this machine has {cpus}")
        # on loopback: a cluster started for one run takes no connections from other machines
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1")
    else:
        try:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise TuckerTRTError(f"cannot join the Ray cluster at {options.address}: {e}") from None
    return True


def _run(ray: Any, todo: deque, summary: CohortSummary, loader: RunnerLoader, options: CohortOptions,
         threads: int, out_dir: Path) -> None:
    from tqdm import tqdm

    actor_class = ray.remote(num_cpus=threads)(CaseWorker)
    actors = [actor_class.remote(loader, options.tile_step, threads, str(out_dir.resolve()))
              for _ in range(min(options.workers, len(todo)))]
    pending: dict[Any, tuple[Any, tuple]] = {}

    def submit(actor: Any) -> None:
        if todo:
            job = todo.popleft()
            pending[actor.segment.remote(*job, options.masks)] = (actor, job)

    for actor in actors:
        submit(actor)
    bar = tqdm(total=len(todo) + len(pending), unit="case", disable=not options.progress, dynamic_ncols=True)
    start, done, last_error = time.perf_counter(), 0, None
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, (case, source, _labels) = pending.pop(ready[0])
            try:
                record = CaseRecord(**ray.get(ready[0]))
            except ray.exceptions.RayActorError as e:  # the worker died: its model did not load, or it was killed
                last_error = _last_line(e)
                summary.cases[case] = CaseRecord(case, source, "failed", error=f"worker died: {last_error}")
                actors.remove(actor)
                if not actors:
                    _fail_remaining(todo, summary, f"no worker left: {last_error}")
            else:
                summary.cases[case] = record
                submit(actor)
            done += 1
            minutes = (time.perf_counter() - start) / 60
            bar.set_postfix_str(f"{done / minutes:.2f} cases/min" if minutes > 0 else "")
            bar.update(1)
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref, force=True)


def _fail_remaining(todo: deque, summary: CohortSummary, error: str) -> None:
    while todo:
        case, source, _ = todo.popleft()
        summary.cases[case] = CaseRecord(case, source, "failed", error=error)


def _last_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__
