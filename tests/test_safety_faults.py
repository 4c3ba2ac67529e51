"""Fault injection: SIGTERM and SIGKILL at 20 points while segment, export, build and finetune write their outputs.

Each run is a real ``python -m tuckertrt`` process that signals itself at a named point of the writing code
(``TUCKERTRT_TEST_FAULT=<point>[#N]:<SIGNAL>``: after staging, before a file replaces its destination, before a set
is published). Afterwards the inputs are byte-identical and the output is the complete previous set or absent;
after SIGTERM no temporary is left and the exit code is 143. After SIGKILL a temporary folder may stay beside the
output; the next run that writes there removes it (its process is gone), which the reruns check, and the rerun
(``--resume`` for finetune) gives the same result as an uninterrupted run. A training folder keeps its whole
checkpoints after an interruption: that is what ``--resume`` continues.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.safety_inputs import REPO, changes, small_ct, tree_state

SEGMENT = ["segment", "ct.nii.gz", "-o", "seg.nii.gz", "--masks", "--model", "fixture-3mm"]
EXPORT = ["export", "fixture-3mm", "--df", "0.5", "--no-fp16", "--no-verify", "-o", "exp"]
BUILD = ["build", "fixture-3mm", "--no-engines", "--backend", "onnxruntime", "--validate", "ct.nii.gz", "-o", "b"]
FINETUNE = ["finetune", "fixture-3mm", "--df", "0.5", "ct.nii.gz", "--distill", "--iterations", "4",
            "--checkpoint-every", "2", "--batch-size", "1", "--patch", "32", "32", "32", "-o", "ft"]

# (command, fault point, signal): 20 interruptions
POINTS = [(cmd, point, sig) for sig in ("SIGTERM", "SIGKILL") for cmd, point in (
    ("segment", "staged"), ("segment", "replace"), ("segment", "replace#3"), ("segment", "publish"),
    ("export", "staged"), ("export", "publish"),
    ("build", "staged"), ("build", "replace"),
    ("finetune", "replace"), ("finetune", "replace#4"))]  # the 4th: after zero_shot.json, model.pt, state.pt
COMMANDS = {"segment": SEGMENT, "export": EXPORT, "build": BUILD, "finetune": FINETUNE}
OUTPUTS = {"segment": ["seg.nii.gz", "seg.json", "seg"], "export": ["exp"], "build": ["b"], "finetune": ["ft"]}


def run(args: list[str], cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("TUCKERTRT_TEST_FAULT", None)
    if fault:
        env["TUCKERTRT_TEST_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "tuckertrt", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".part"))


def outputs_state(folder: Path, command: str) -> dict[str, tuple]:
    state = tree_state(folder)
    return {k: v for k, v in state.items() if any(k == o or k.startswith(o + "/") for o in OUTPUTS[command])}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """Uninterrupted segment, export and finetune runs: the reference results, and the previous set segment
    replaces."""
    folder = tmp_path_factory.mktemp("baseline")
    small_ct(folder / "ct.nii.gz")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda args: run(args, folder), [SEGMENT, EXPORT, FINETUNE]))
    for r in results:
        assert r.returncode == 0, r.stderr
    return folder


def _interrupt(baseline: Path, work: Path, command: str, point: str, sig: str) -> subprocess.CompletedProcess:
    work.mkdir()
    shutil.copy(baseline / "ct.nii.gz", work / "ct.nii.gz")
    if command == "segment":  # a complete earlier set that the run would replace
        for name in OUTPUTS["segment"]:
            (shutil.copytree if (baseline / name).is_dir() else shutil.copy)(baseline / name, work / name)
    return run(COMMANDS[command], work, f"{point}:{sig}")


def test_interrupted_writes_leave_the_previous_set_or_nothing(baseline, tmp_path):
    works = [tmp_path / f"{cmd}-{point.replace('#', '_')}-{sig}" for cmd, point, sig in POINTS]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda job: _interrupt(baseline, job[0], *job[1]), zip(works, POINTS)))
    for work, (command, point, sig), result in zip(works, POINTS, results):
        label = f"{command} at {point} by {sig}"
        expected = 143 if sig == "SIGTERM" else -9
        assert result.returncode == expected, f"{label}: {result.returncode} {result.stderr[-400:]}"
        if sig == "SIGTERM":
            assert result.stderr.strip().splitlines()[-1] == "Terminated.", label
            assert temporaries(work) == [], label
        assert digest(work / "ct.nii.gz") == digest(baseline / "ct.nii.gz"), label
        if command == "segment":
            assert outputs_state(work, command) == outputs_state(baseline, command), label
        elif command in ("export", "build"):
            assert not (work / OUTPUTS[command][0]).exists(), label

    # reruns after SIGKILL (finetune with --resume, from the checkpoint of iteration 2): the same result as the
    # uninterrupted run, and the killed run's temporaries are gone
    rerun = {"segment": tmp_path / "segment-publish-SIGKILL", "export": tmp_path / "export-publish-SIGKILL",
             "finetune": tmp_path / "finetune-replace_4-SIGKILL"}
    assert (rerun["finetune"] / "ft" / "state.pt").is_file()
    with ThreadPoolExecutor(3) as pool:
        finished = list(pool.map(lambda c: run(COMMANDS[c] + (["--resume"] if c == "finetune" else []), rerun[c]),
                                 rerun))
    for (command, work), result in zip(rerun.items(), finished):
        assert result.returncode == 0, result.stderr
        assert temporaries(work) == [], command
    seg = rerun["segment"]
    assert digest(seg / "seg.nii.gz") == digest(baseline / "seg.nii.gz")
    assert {p.name: digest(p) for p in (seg / "seg").iterdir()} == \
        {p.name: digest(p) for p in (baseline / "seg").iterdir()}
    assert digest(rerun["export"] / "exp" / "model.onnx") == digest(baseline / "exp" / "model.onnx")
    reports = [json.loads((folder / "ft" / "report.json").read_text()) for folder in (baseline, rerun["finetune"])]
    assert reports[1]["resumed_from"] == 2 and reports[0]["recovered"] == reports[1]["recovered"]
