"""The package as a user installs it: build the wheel, install it in a fresh virtual environment outside the
checkout, and run ``tuckertrt build`` and ``tuckertrt segment`` from a folder that is not the checkout.

The venv sees the machine's site-packages (torch, ONNX Runtime, OpenVINO come from there) but imports tuckertrt
from the wheel: the test checks ``tuckertrt.__file__`` so that the editable checkout cannot stand in for it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
# What the wheel is built from: the sources, without build outputs or the VCS.
_NOT_SOURCES = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                      ".venv", "export", "engines", "out")


def _run(args: list, cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, tuckertrt console script, environment, a working folder outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    sources = root / "src"
    shutil.copytree(CHECKOUT, sources, ignore=_NOT_SOURCES)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist",
                  sources], root, env)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (root / "dist").glob("tuckertrt-*.whl")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--system-site-packages", venv], root, env)
    assert made.returncode == 0, made.stderr
    python, script = venv / "bin" / "python", venv / "bin" / "tuckertrt"
    install = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], root, env)
    assert install.returncode == 0, install.stderr[-2000:]
    work = root / "work"
    work.mkdir()
    env["TUCKERTRT_CACHE"] = str(root / "cache")
    return python, script, env, work


def test_the_wheel_is_what_the_venv_imports(installed):
    python, _, env, work = installed
    probe = _run([python, "-c", "import tuckertrt, tuckertrt.data as d; print(tuckertrt.__file__); "
                                "print(d.bundled_model_folder('fixture-3mm')); print(d.calibration_list())"],
                 work, env)
    assert probe.returncode == 0, probe.stderr
    module, fixture, calibration = (Path(line) for line in probe.stdout.split())
    site = python.parent.parent / "lib"
    for path in (module, fixture, calibration):
        assert site in path.parents and CHECKOUT not in path.parents, path
    assert (fixture / "fold_0" / "checkpoint_final.pth").is_file()
    assert json.loads(calibration.read_text())["cases"] == ["example_ct.nii.gz"]


@pytest.mark.slow
def test_build_and_segment_from_the_installed_wheel(installed):
    python, script, env, work = installed
    built = _run([script, "build", "-o", "out", "--no-engines"], work, env)
    report_path = work / "out" / "report.json"
    assert report_path.is_file(), built.stderr[-2000:]
    report = json.loads(report_path.read_text())
    # the whole job ran on the bundled defaults: fixture model, DF 0.3, data-aware factors, the example CT with
    # TS's labels of it and the held-out DICOM series, all found inside the installed package
    assert report["model"] == "fixture-3mm" and report["df"] == 0.3 and report["init"] == "data"
    assert report["compression"]["compression_ratio"] > 1
    case, held_out = report["cases"]
    assert (case["case"], held_out["case"], held_out["held_out"]) == ("example_ct", "example_ct_dicom", True)
    assert case["vs_reference"]["original"]["mean_dice"] > 0.9  # the trained fixture on its own CT
    assert all(c["torch_vs_onnx_fp32"]["passed"] for c in report["export_comparisons"].values())
    assert report["backend"]["name"] in ("onnxruntime", "openvino")
    assert built.returncode == (0 if report["gates"]["passed"] else 1), built.stderr[-2000:]
    assert report["gates"]["passed"] or report["levers"]  # a failed gate says what would help
    assert (work / "out" / "model.pt").is_file() and (work / "out" / "manifest.json").is_file()

    ct = Path(_run([python, "-c", "import tuckertrt.data as d; print(d.example_ct())"], work, env).stdout.strip())
    segmented = _run([script, "segment", ct, "-o", "seg.nii.gz", "--model", "fixture-3mm"], work, env)
    assert segmented.returncode == 0, segmented.stderr[-2000:]
    labels = nib.load(work / "seg.nii.gz")
    assert labels.shape == nib.load(ct).shape
    assert len(np.unique(np.asarray(labels.dataobj))) > 20
    assert sorted(p.name for p in work.iterdir()) == ["out", "seg.json", "seg.nii.gz"]
