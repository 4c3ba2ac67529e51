"""``segment DIR --ray``: a real local Ray (2 CPUs), a cohort with a corrupt case, a driver killed midway."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob_ct

ray = pytest.importorskip("ray")

GOOD_CASES = 6
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray with 2 CPUs for the module; each run's driver joins it by address."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def cohort(tmp_path) -> Path:
    folder = tmp_path / "cohort"
    folder.mkdir()
    for i in range(GOOD_CASES):
        ct = blob_ct((40, 36, 16), (20.0 - i, 18.0, 8.0), 4.0 + i % 3).astype(np.int16)
        nib.save(nib.Nifti1Image(ct, np.diag([3.0, 3.0, 3.0, 1.0])), folder / f"case{i}.nii.gz")
    (folder / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + bytes(300))  # a gzip header, then nothing sensible
    return folder


def segment_command(cohort: Path, out: Path, address: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "tuckertrt", "segment", str(cohort), "-o", str(out), "--model", "fixture-3mm",
            "--ray", address, "--workers", str(workers), "--threads-per-worker", "1"]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def outputs_state(out: Path, case: str) -> tuple:
    return tuple((f.stat().st_ino, f.stat().st_mtime_ns) for f in (out / f"{case}.nii.gz", out / f"{case}.json"))


def test_a_killed_cohort_resumes_without_redoing_complete_cases(cluster, cohort, tmp_path):
    out = tmp_path / "out"
    driver = subprocess.Popen(segment_command(cohort, out, cluster), env=environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    records = out / ".cohort"
    deadline = time.monotonic() + 240
    while len(list(records.glob("*.json"))) < 2:
        assert driver.poll() is None, driver.stdout.read().decode(errors="replace")
        assert time.monotonic() < deadline, "no two cases finished in time"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = sorted(p.stem for p in records.glob("*.json"))
    assert 2 <= len(finished) < GOOD_CASES
    before = {case: outputs_state(out, case) for case in finished}

    rerun = subprocess.run(segment_command(cohort, out, cluster, workers=2), env=environment(),
                           capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 1, rerun.stderr
    assert "1 of 7 cases failed" in rerun.stderr
    summary = json.loads((out / "cohort_summary.json").read_text())
    cases = summary["cases"]
    assert cases["corrupt"]["status"] == "failed" and "corrupt.nii.gz" in cases["corrupt"]["error"]
    assert {c for c, r in cases.items() if r["status"] == "kept"} == set(finished)
    assert {c for c, r in cases.items() if r["status"] == "done"} == {f"case{i}" for i in range(GOOD_CASES)} \
        - set(finished)
    for case in finished:  # nothing complete was written again
        assert outputs_state(out, case) == before[case]
    for i in range(GOOD_CASES):
        labels = nib.load(out / f"case{i}.nii.gz")
        assert labels.shape == (40, 36, 16) and np.asarray(labels.dataobj).max() > 0
        record = cases[f"case{i}"]
        assert record["seconds"] > 0 and record["tiles"] >= 1 and set(record["outputs"]) == {
            f"case{i}.nii.gz", f"case{i}.json"}
    assert summary["counts"] == {"done": GOOD_CASES - len(finished), "kept": len(finished), "failed": 1}
    assert not list(out.rglob("*.part"))


def test_a_changed_output_is_redone(cluster, cohort, tmp_path):
    out = tmp_path / "out"
    first = subprocess.run(segment_command(cohort, out, cluster, workers=2), env=environment(),
                           capture_output=True, text=True, timeout=400)
    assert first.returncode == 1, first.stderr
    labels = out / "case0.nii.gz"
    labels.write_bytes(labels.read_bytes()[:-8])  # a damaged output: its hash no longer matches
    kept_state = outputs_state(out, "case1")
    second = subprocess.run(segment_command(cohort, out, cluster, workers=2), env=environment(),
                            capture_output=True, text=True, timeout=400)
    assert second.returncode == 1, second.stderr
    cases = json.loads((out / "cohort_summary.json").read_text())["cases"]
    assert cases["case0"]["status"] == "done" and cases["case1"]["status"] == "kept"
    assert outputs_state(out, "case1") == kept_state
    assert nib.load(labels).shape == (40, 36, 16)


def test_the_default_backend_is_resolved_once_and_workers_open_the_cached_entry(cluster, tmp_path, capsys):
    from tests.helpers import run_main
    from tuckertrt.bench.auto_backend import open_auto
    from tuckertrt.inference.segment import segment_volume
    from tuckertrt.models import load_model

    cases, cache = tmp_path / "cases", tmp_path / "cache"
    cases.mkdir()
    for i in range(2):
        ct = blob_ct((40, 36, 16), (20.0 - 2 * i, 18.0, 8.0), 4.0 + i).astype(np.int16)
        nib.save(nib.Nifti1Image(ct, np.diag([3.0, 3.0, 3.0, 1.0])), cases / f"case{i}.nii.gz")
    # local segment with no --backend: auto, exported and measured into the cache on first use
    code, out, err = run_main(["segment", cases, "-o", tmp_path / "local", "--model", "fixture-3mm",
                               "--cache-dir", cache], capsys)
    assert code == 0 and "exported and measured" in out, err
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*")}
    command = [sys.executable, "-m", "tuckertrt", "segment", str(cases), "-o", str(tmp_path / "ray"), "--model",
               "fixture-3mm", "--ray", cluster, "--workers", "2", "--threads-per-worker", "1", "--cache-dir",
               str(cache)]
    run = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    # resolved once in the driver, from the cache; the workers opened that entry and exported nothing
    assert run.stdout.count("fixture-3mm: backend") == 1 and "cached, opened" in run.stdout, run.stdout
    assert "exported" not in run.stdout and "first use" not in run.stdout
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*")} == before
    summary = json.loads((tmp_path / "ray" / "cohort_summary.json").read_text())
    assert len({r["worker"] for r in summary["cases"].values()}) == 2
    # the entry opened here as a worker opens it (its 1 thread): the workers' labels exactly
    single = open_auto(load_model("fixture-3mm"), cache, threads=1)
    assert not single.exported
    for i in range(2):
        local, ray_run = (json.loads((tmp_path / d / f"case{i}.json").read_text())["runners"][0]
                          for d in ("local", "ray"))
        assert ray_run["backend"] == local["backend"] and ray_run["cache_entry"] == local["cache_entry"]
        assert ray_run["threads"] == 1  # the worker's share of the CPUs
        labels = np.asarray(nib.load(tmp_path / "ray" / f"case{i}.nii.gz").dataobj)
        assert labels.max() > 0 and np.array_equal(labels, segment_volume(cases / f"case{i}.nii.gz",
                                                                            single.runner).labels)
        # local segment ran the same export with the machine's threads: reductions in another order
        local_labels = np.asarray(nib.load(tmp_path / "local" / f"case{i}.nii.gz").dataobj)
        print(f"case{i}: {np.mean(local_labels == labels):.6f} of voxels as local segment's")
        assert np.mean(local_labels == labels) > 0.99
