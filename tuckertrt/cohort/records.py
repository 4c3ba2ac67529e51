"""What a cohort run knows of each case: a record per case, written as soon as the case's outputs are, and the
summary of the run. A case is complete when its record says done and every output still has its recorded hash."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tuckertrt.fileio import sha256_file, write_json_atomic

SUMMARY_NAME = "cohort_summary.json"
RECORDS_DIR = ".cohort"  # inside the output folder: one <case>.json per finished case


@dataclass
class CaseRecord:
    case: str
    source: str
    status: str  # "done" (this run), "kept" (complete from an earlier run), "failed"
    seconds: float | None = None  # wall time in the worker, reading to writing
    segment_seconds: float | None = None
    tiles: int | None = None
    worker: str | None = None
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # file (relative to the output folder) -> sha256

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


def record_path(out_dir: Path, case: str) -> Path:
    return out_dir / RECORDS_DIR / f"{case}.json"


def hash_outputs(written: Iterable[Path], out_dir: Path) -> dict[str, str]:
    """sha256 of every file written (the files of a masks folder included), keyed by path in ``out_dir``."""
    files = []
    for path in written:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return {str(f.relative_to(out_dir)): sha256_file(f) for f in files}


def write_record(out_dir: Path, record: CaseRecord) -> None:
    write_json_atomic(record_path(out_dir, record.case), record.to_json())


def complete_record(out_dir: Path, case: str, required: Iterable[Path]) -> CaseRecord | None:
    """The case's record if it says done and its outputs (``required`` among them) are all there, unchanged."""
    try:
        data = json.loads(record_path(out_dir, case).read_text())
        record = CaseRecord(**data)
    except (OSError, ValueError, TypeError):
        return None
    if record.status not in ("done", "kept") or not record.outputs:
        return None
    if any(str(p.relative_to(out_dir)) not in record.outputs for p in required):
        return None
    for name, digest in record.outputs.items():
        path = out_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return record


@dataclass
class CohortSummary:
    """Per-case status and timings of a run, in ``<output>/cohort_summary.json``."""

    path: Path
    options: dict[str, Any]
    cases: dict[str, CaseRecord] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> dict[str, CaseRecord]:
        return {k: r for k, r in self.cases.items() if r.status == "failed"}

    def counts(self) -> dict[str, int]:
        counts = {"done": 0, "kept": 0, "failed": 0}
        for record in self.cases.values():
            counts[record.status] += 1
        return counts

    def counts_line(self) -> str:
        c = self.counts()
        per_min = c["done"] / self.seconds * 60 if self.seconds > 0 else 0.0
        return (f"{len(self.cases)} cases: {c['done']} segmented ({per_min:.2f} cases/min), {c['kept']} complete "
                f"from an earlier run, {c['failed']} failed")

    def save(self) -> Path:
        return write_json_atomic(self.path, {"options": self.options, "seconds": round(self.seconds, 3),
                                             "counts": self.counts(),
                                             "cases": {k: r.to_json() for k, r in self.cases.items()}})
