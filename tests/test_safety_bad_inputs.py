"""Bad inputs to every command: one line on stderr, the right exit code, and nothing on disk changed.

Each case builds its inputs in a fresh folder, fingerprints the whole folder (inputs and the output's parent,
hidden files included), runs the command, and checks the folder is byte-identical afterwards: no output, no
``.part`` file, no input touched. Most cases run in-process through ``tuckertrt.cli.main`` (one torch import for
all); a few run as real subprocesses.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.safety_inputs import (changes, dicom_series, dicom_slice, model_copy, nifti_with_header, run_subprocess,
                                 small_ct, tree_state, write_nifti)
from tuckertrt.cli import main
from tuckertrt.errors import TuckerTRTError

Setup = Callable[[Path], list]


def _text(path: Path, text: str = "not what it claims to be\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _truncated(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _plans(t: Path, edit: Callable[[dict], None], name: str = "plans.json") -> Path:
    folder = model_copy(t / "model")
    plans = json.loads((folder / name).read_text())
    edit(plans)
    (folder / name).write_text(json.dumps(plans))
    return folder


def _drop_patch(p: dict) -> None:
    del p["configurations"]["3d_fullres"]["patch_size"]


def _string_patch(p: dict) -> None:
    p["configurations"]["3d_fullres"]["patch_size"] = "big"


def _bad_labels(d: dict) -> None:
    d["labels"] = {"background": 0, "liver": "one"}


def _tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["input"], ["logits"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 4])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph), str(path))
    return path


def _engine(t: Path, sidecar: object) -> Path:
    engine = t / "m.engine"
    engine.write_bytes(b"\x00engine bytes\x00")
    (t / "m.engine.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    return engine


def _good_sidecar(engine_bytes: bytes = b"\x00engine bytes\x00", **override) -> dict:
    import hashlib

    return {"format": "tuckertrt-engine/1", "engine_bytes": len(engine_bytes),
            "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(), "target": "trt", **override}


def _user_folder(path: Path) -> Path:
    _text(path / "my_notes.txt", "the user's own file\n")
    return path


def _ct(t: Path) -> Path:
    return small_ct(t / "ct.nii.gz")


M = ["--model", "fixture-3mm"]

# name -> (setup returning the arguments, exit code, a fragment of the one stderr line)
CASES: dict[str, tuple[Setup, int, str]] = {
    # segment: images
    "segment 4D image": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((10, 10, 10, 3), -1000)),
                                    "-o", t / "o.nii.gz", *M], 1, "4D"),
    "segment 2D image": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((20, 20), -1000)),
                                    "-o", t / "o.nii.gz", *M], 1, "2D"),
    "segment single slice": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((20, 20, 1), -1000)),
                                        "-o", t / "o.nii.gz", *M], 1, "single slice"),
    "segment text as NIfTI": (lambda t: ["segment", _text(t / "ct.nii.gz"), "-o", t / "o.nii.gz", *M], 1,
                              "not a readable NIfTI"),
    "segment other file type": (lambda t: ["segment", _text(t / "ct.txt"), "-o", t / "o.nii.gz", *M], 1,
                                "neither a NIfTI"),
    "segment truncated nii.gz": (lambda t: ["segment", _truncated(_ct(t)), "-o", t / "o.nii.gz", *M], 1,
                                 "ct.nii.gz"),
    "segment truncated nii": (lambda t: ["segment", _truncated(small_ct(t / "ct.nii"), 0.7), "-o",
                                         t / "o.nii.gz", *M], 1, "ct.nii"),
    "segment empty file": (lambda t: ["segment", _text(t / "ct.nii.gz", ""), "-o", t / "o.nii.gz", *M], 1,
                           "not a readable NIfTI"),
    "segment singular affine": (lambda t: ["segment", nifti_with_header(t / "ct.nii.gz", srow_y=[0, 0, 0, 0]),
                                           "-o", t / "o.nii.gz", *M], 1, "singular affine"),
    "segment NaN affine": (lambda t: ["segment", nifti_with_header(t / "ct.nii.gz", srow_x=[np.nan, 0, 0, 0]),
                                      "-o", t / "o.nii.gz", *M], 1, "NaN"),
    "segment 1e6 mm voxels": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((20, 20, 10), -1000),
                                                                np.diag([1e6, 1e6, 1e6, 1.0])),
                                         "-o", t / "o.nii.gz", *M], 1, "voxel sizes"),
    "segment complex voxels": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((20, 20, 10), -1000),
                                                                 dtype=np.complex64), "-o", t / "o.nii.gz", *M],
                               1, "complex64"),
    "segment NaN voxels": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((20, 20, 10), np.nan),
                                                             dtype=np.float32), "-o", t / "o.nii.gz", *M],
                           1, "NaN"),
    "segment not a CT": (lambda t: ["segment", write_nifti(t / "ct.nii.gz", np.full((20, 20, 10), 500)),
                                    "-o", t / "o.nii.gz", *M], 1, "does not look like a CT"),
    "segment empty folder": (lambda t: ["segment", (t / "empty").mkdir() or t / "empty", "-o", t / "o.nii.gz",
                                        *M], 1, "no DICOM image slices"),
    "segment FIFO input": (lambda t: ["segment", _fifo(t / "ct.nii.gz"), "-o", t / "o.nii.gz", *M], 1,
                           "not a regular file"),
    "segment missing input": (lambda t: ["segment", t / "nope.nii.gz", "-o", t / "o.nii.gz", *M], 1,
                              "not found"),
    # segment: where the outputs go
    "segment output is input": (lambda t: ["segment", _ct(t), "-o", t / "ct.nii.gz", *M], 2,
                                "would overwrite the input"),
    "segment masks over input folder": (lambda t: ["segment", small_ct(t / "case" / "ct.nii.gz"), "-o",
                                                   t / "case.nii.gz", "--masks", *M], 2,
                                        "would overwrite the input"),
    "segment masks over user folder": (lambda t: ["segment", _ct(t), "-o", t / "seg.nii.gz", "--masks", *M]
                                       if _user_folder(t / "seg") else [], 2, "was not written by tuckertrt"),
    "segment over user file": (lambda t: ["segment", _ct(t), "-o", _text(t / "seg.nii.gz"), *M], 2,
                               "was not written by tuckertrt"),
    "segment over user sidecar": (lambda t: ["segment", _ct(t), "-o", t / "seg.nii.gz", *M]
                                  if _text(t / "seg.json", "{}") else [], 2, "was not written by tuckertrt"),
    "segment output link to input": (lambda t: ["segment", _ct(t), "-o",
                                                (t / "o.nii.gz").symlink_to(t / "ct.nii.gz") or t / "o.nii.gz",
                                                *M], 2, "would overwrite the input"),
    "segment output folder links into DICOM": (lambda t: ["segment", dicom_series(t / "dcm"), "-o",
                                                          (t / "out").symlink_to(t / "dcm") or t / "out", *M], 2,
                                               "would overwrite the input"),
    "segment output into own input folder": (lambda t: ["segment", small_ct(t / "cases" / "a.nii.gz").parent,
                                                        "-o", t / "cases", *M], 2, "would overwrite the input"),
    "segment output under a file": (lambda t: ["segment", _ct(t), "-o", _text(t / "f.txt") / "o.nii.gz", *M], 1,
                                    "not a folder"),
    "segment tile step nan": (lambda t: ["segment", _ct(t), "-o", t / "o.nii.gz", "--tile-step", "nan", *M], 2,
                              "--tile-step"),
    "segment tile step 0": (lambda t: ["segment", _ct(t), "-o", t / "o.nii.gz", "--tile-step", "0", *M], 2,
                            "--tile-step"),
    "segment device foo": (lambda t: ["segment", _ct(t), "-o", t / "o.nii.gz", "--device", "foo", *M], 2,
                           "--device"),
    "segment backend without artifacts": (lambda t: ["segment", _ct(t), "-o", t / "o.nii.gz", "--backend",
                                                     "onnxruntime", *M], 2, "needs --artifacts"),
    "segment unknown model": (lambda t: ["segment", _ct(t), "-o", t / "o.nii.gz", "--model", "no-such"], 1,
                              "model not found"),
    "segment missing -o": (lambda t: ["segment", _ct(t), *M], 2, "Missing option"),
    # segment: DICOM series
    "dicom two series": (lambda t: ["segment", dicom_series(t / "d", (0, 2, 4)) and
                                    dicom_series(t / "d2", (6, 8), series="1.2.3.9") and _merge(t), "-o",
                                    t / "o.nii.gz", *M], 1, "2 DICOM series"),
    "dicom duplicate position": (lambda t: ["segment", dicom_series(t / "d", (0, 2, 2, 4)), "-o", t / "o.nii.gz",
                                            *M], 1, "duplicate slice position"),
    "dicom gap": (lambda t: ["segment", dicom_series(t / "d", (0, 2, 4, 10, 12)), "-o", t / "o.nii.gz", *M], 1,
                  "not uniform"),
    "dicom tilted gantry": (lambda t: ["segment", _tilted(t / "d"), "-o", t / "o.nii.gz", *M], 1, "tilted"),
    "dicom mixed orientation": (lambda t: ["segment", _mixed_orientation(t / "d"), "-o", t / "o.nii.gz", *M], 1,
                                "orientation"),
    "dicom corrupt slice": (lambda t: ["segment", _corrupt_slice(t / "d"), "-o", t / "o.nii.gz", *M], 1,
                            "slice002.dcm"),
    "dicom single slice": (lambda t: ["segment", dicom_series(t / "d", (0,)), "-o", t / "o.nii.gz", *M], 1,
                           "single DICOM slice"),
    "dicom zero pixel spacing": (lambda t: ["segment", dicom_series(t / "d", spacing=(0.0, 0.0)), "-o",
                                            t / "o.nii.gz", *M], 1, "invalid"),
    # decompose / stats: models and rank files
    "decompose text as checkpoint": (lambda t: ["decompose", _text(t / "m.pt"), "--df", "0.5", "-o",
                                                t / "o.pt"], 1, "not a readable PyTorch checkpoint"),
    "decompose plans missing key": (lambda t: ["decompose", _plans(t, _drop_patch), "--df", "0.5", "-o",
                                               t / "o.pt"], 1, "malformed"),
    "decompose plans wrong type": (lambda t: ["decompose", _plans(t, _string_patch), "--df", "0.5", "-o",
                                              t / "o.pt"], 1, "malformed"),
    "decompose plans not JSON": (lambda t: ["decompose", _text(model_copy(t / "model") / "plans.json").parent,
                                            "--df", "0.5", "-o", t / "o.pt"], 1, "not valid JSON"),
    "decompose dataset labels wrong type": (lambda t: ["decompose", _plans(t, _bad_labels, "dataset.json"),
                                                       "--df", "0.5", "-o", t / "o.pt"], 1, "malformed"),
    "decompose checkpoint is a folder": (lambda t: ["decompose", _ckpt_folder(t), "--df", "0.5", "-o", t / "o.pt"],
                                         1, "no checkpoint_final.pth"),
    "decompose onto own checkpoint": (lambda t: ["decompose", model_copy(t / "model"), "--df", "0.5", "-o",
                                                 t / "model" / "fold_0" / "checkpoint_final.pth"], 2,
                                      "would overwrite the input"),
    "decompose onto own folder": (lambda t: ["decompose", model_copy(t / "model"), "--df", "0.5", "-o",
                                             t / "model"], 2, "is a directory"),
    "decompose over user file": (lambda t: ["decompose", "fixture-3mm", "--df", "0.5", "-o", _text(t / "o.pt")],
                                 2, "was not written by tuckertrt"),
    "decompose ranks wrong types": (lambda t: ["decompose", "fixture-3mm", "--ranks",
                                               _text(t / "r.json", json.dumps({"encoder": {"a": 1}})),
                                               "-o", t / "o.pt"], 1, "unknown layers"),
    "decompose ranks list of strings": (lambda t: ["decompose", "fixture-3mm", "--ranks",
                                                   _text(t / "r.json", json.dumps(["a", "b"])), "-o", t / "o.pt"],
                                        1, "r.json"),
    "decompose ranks not JSON": (lambda t: ["decompose", "fixture-3mm", "--ranks", _text(t / "r.json"), "-o",
                                            t / "o.pt"], 1, "not valid JSON"),
    "decompose ranks missing": (lambda t: ["decompose", "fixture-3mm", "--ranks", t / "r.json", "-o", t / "o.pt"],
                                1, "not found"),
    "decompose df 0": (lambda t: ["decompose", "fixture-3mm", "--df", "0", "-o", t / "o.pt"], 2, "--df"),
    "decompose df nan": (lambda t: ["decompose", "fixture-3mm", "--df", "nan", "-o", t / "o.pt"], 2, "--df"),
    "decompose min rank 0": (lambda t: ["decompose", "fixture-3mm", "--df", "0.5", "--min-rank", "0", "-o",
                                        t / "o.pt"], 2, "--min-rank"),
    "decompose bad sha256": (lambda t: ["decompose", "fixture-3mm", "--df", "0.5", "--sha256", "xyz", "-o",
                                        t / "o.pt"], 2, "--sha256"),
    "stats text as model": (lambda t: ["stats", _text(t / "m.pth")], 1, "not a readable PyTorch checkpoint"),
    "stats model folder without plans": (lambda t: ["stats", (t / "m").mkdir() or t / "m"], 1,
                                         "not an nnU-Net results folder"),
    # export
    "export opset 999": (lambda t: ["export", "fixture-3mm", "--opset", "999", "-o", t / "e"], 2, "--opset"),
    "export patch 0 0 0": (lambda t: ["export", "fixture-3mm", "--patch", "0", "0", "0", "-o", t / "e"], 2,
                           "--patch"),
    "export dynamic batch 0": (lambda t: ["export", "fixture-3mm", "--dynamic-batch", "0", "-o", t / "e"], 2,
                               "--dynamic-batch"),
    "export dynamic batch text": (lambda t: ["export", "fixture-3mm", "--dynamic-batch", "x", "-o", t / "e"], 2,
                                  "--dynamic-batch"),
    "export into user folder": (lambda t: ["export", "fixture-3mm", "-o", _user_folder(t / "e")], 2,
                                "was not written by tuckertrt"),
    "export into model folder": (lambda t: ["export", model_copy(t / "model"), "-o", t / "model" / "onnx"], 2,
                                 "would overwrite the input"),
    "export onto a file": (lambda t: ["export", "fixture-3mm", "-o", _text(t / "e")], 2, "not a folder"),
    # engine / inspect
    "engine garbage ONNX": (lambda t: ["engine", _text(t / "m.onnx"), "-o", t / "engines"], 1,
                            "not a readable ONNX"),
    "engine truncated ONNX": (lambda t: ["engine", _truncated(_tiny_onnx(t / "m.onnx"), 0.6), "-o",
                                         t / "engines"], 1, "not a readable ONNX"),
    "engine export folder without ONNX": (lambda t: ["engine", (t / "exp").mkdir() or t / "exp", "-o",
                                                     t / "engines"], 1, "model.onnx"),
    "engine FIFO as ONNX": (lambda t: ["engine", _fifo(t / "m.onnx"), "-o", t / "engines"], 1,
                            "not a regular file"),
    "engine output is a file": (lambda t: ["engine", _tiny_onnx(t / "m.onnx"), "-o", _text(t / "engines")], 2,
                                "is a file"),
    "engine bad patch": (lambda t: ["engine", _tiny_onnx(t / "m.onnx"), "--patch", "0x0x0", "-o", t / "engines"],
                         2, "--patch"),
    "inspect sidecar not JSON": (lambda t: ["inspect", _engine(t, "{not json")], 1, "not valid JSON"),
    "inspect sidecar wrong format": (lambda t: ["inspect", _engine(t, {"format": "x"})], 1, "sidecar"),
    "inspect sidecar wrong types": (lambda t: ["inspect", _engine(t, _good_sidecar(tensorrt=5, flags=[1],
                                                                                   input="x"))], 1, "sidecar"),
    "inspect sidecar is a list": (lambda t: ["inspect", _engine(t, [1, 2])], 1, "sidecar"),
    "inspect truncated engine": (lambda t: ["inspect", _engine(t, _good_sidecar(b"\x00engine bytes\x00 longer"))],
                                 1, "corrupt"),
    "inspect no sidecar": (lambda t: ["inspect", _text(t / "m.engine")], 1, "no sidecar"),
    # build
    "build tile step nan": (lambda t: ["build", "fixture-3mm", "--tile-step", "nan", "-o", t / "b"], 2,
                            "--tile-step"),
    "build into user folder": (lambda t: ["build", "fixture-3mm", "-o", _user_folder(t / "b")], 2,
                               "was not written by tuckertrt"),
    "build min dice 2": (lambda t: ["build", "fixture-3mm", "--min-dice", "2", "-o", t / "b"], 2, "--min-dice"),
    "build output is the validation CT folder": (lambda t: ["build", "fixture-3mm", "--validate",
                                                            small_ct(t / "v" / "ct.nii.gz"), "-o", t / "v"], 2,
                                                 "would overwrite the input"),
    # finetune / prune
    "finetune temperature 0": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill",
                                          "--temperature", "0", "-o", t / "ft"], 2, "--temperature"),
    "finetune lr inf": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill", "--lr", "inf",
                                   "-o", t / "ft"], 2, "--lr"),
    "finetune lr nan": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill", "--lr", "nan",
                                   "-o", t / "ft"], 2, "--lr"),
    "finetune batch size 0": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill",
                                         "--batch-size", "0", "-o", t / "ft"], 2, "--batch-size"),
    "finetune val fraction 1.5": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill",
                                             "--val-fraction", "1.5", "-o", t / "ft"], 2, "--val-fraction"),
    "finetune device foo": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill", "--device",
                                       "foo", "-o", t / "ft"], 2, "--device"),
    "finetune into user folder": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill", "-o",
                                             _user_folder(t / "ft")], 2, "was not written by tuckertrt"),
    "finetune output is the CT": (lambda t: ["finetune", "fixture-3mm", "--df", "0.5", _ct(t), "--distill", "-o",
                                             t / "ct.nii.gz"], 2, "is a file"),
    "prune without amount": (lambda t: ["prune", "fixture-3mm", "-o", t / "p"], 2, "exactly one of"),
    # report / compare
    "report malformed run": (lambda t: ["report", _text(t / "report.json"), "-o", t / "r"], 1, "report.json"),
    "compare missing artifact": (lambda t: ["compare", t / "a.onnx", t / "b.onnx"], 1, "a.onnx"),
    "compare input and ct": (lambda t: ["compare", "a", "b", "--input", "x.npy", "--ct", "y.nii.gz"], 2,
                             "not both"),
}


def _merge(t: Path) -> Path:
    for f in (t / "d2").iterdir():
        f.rename(t / "d" / f"other_{f.name}")
    (t / "d2").rmdir()
    return t / "d"


def _tilted(folder: Path) -> Path:
    for i in range(5):
        dicom_slice(folder / f"slice{i:03d}.dcm", 0, position=(0.0, 0.5 * i, 2.0 * i))
    return folder


def _mixed_orientation(folder: Path) -> Path:
    dicom_series(folder, (0, 2, 4))
    dicom_slice(folder / "slice009.dcm", 6, orientation=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0))
    return folder


def _corrupt_slice(folder: Path) -> Path:
    dicom_series(folder, (0, 2, 4, 6))
    _truncated(folder / "slice002.dcm", 0.8)
    return folder


def _ckpt_folder(t: Path) -> Path:
    folder = model_copy(t / "model")
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    (folder / "fold_0" / "checkpoint_final.pth").mkdir()
    return folder


def _check_one_line(code: int, err: str, expected_code: int, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    assert fragment in lines[0], lines[0]


def _run_in_process(args: list, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code, capsys.readouterr().err


def test_table_has_enough_cases():
    assert len(CASES) >= 60
    covered = {name.split()[0] for name in CASES}
    assert {"segment", "dicom", "decompose", "stats", "export", "engine", "inspect", "build", "finetune", "prune",
            "report", "compare"} <= covered


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, monkeypatch, capsys):
    setup, expected_code, fragment = CASES[name]
    work = tmp_path / "work dir ü"  # a space and a non-ASCII letter in every path
    work.mkdir()
    args = setup(work)
    monkeypatch.chdir(work)
    before = tree_state(work)
    code, err = _run_in_process(args, capsys)
    _check_one_line(code, err, expected_code, fragment)
    assert changes(before, tree_state(work)) == []


SUBPROCESS_CASES = ["segment masks over input folder", "segment truncated nii.gz", "dicom gap",
                    "decompose onto own checkpoint", "export opset 999", "engine garbage ONNX",
                    "finetune temperature 0", "inspect sidecar not JSON"]


def test_bad_inputs_in_subprocesses(tmp_path):
    """The same cases through ``python -m tuckertrt`` in real processes (two at a time)."""
    jobs = []
    for i, name in enumerate(SUBPROCESS_CASES):
        work = tmp_path / f"case {i} ü"
        work.mkdir()
        jobs.append((name, work, CASES[name][0](work), tree_state(work)))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda job: run_subprocess(job[2], job[1]), jobs))
    for (name, work, _, before), (code, _, err) in zip(jobs, results):
        _, expected_code, fragment = CASES[name]
        _check_one_line(code, err, expected_code, fragment)
        assert changes(before, tree_state(work)) == [], name


@pytest.fixture
def small_mount(tmp_path):
    """A 300 KiB tmpfs (a full disk) mounted inside tmp_path; skipped where mounting is not allowed."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_full_disk_leaves_nothing(small_mount, tmp_path, capsys):
    """Outputs larger than the disk: one line, exit 1, no partial file on the full disk, nothing else changed."""
    before = tree_state(tmp_path)
    code, err = _run_in_process(["decompose", "fixture-3mm", "--df", "0.5", "-o", small_mount / "m.pt"], capsys)
    _check_one_line(code, err, 1, "No space left")
    code, err = _run_in_process(["export", "fixture-3mm", "--no-verify", "-o", small_mount / "e"], capsys)
    _check_one_line(code, err, 1, "No space left")
    assert changes(before, tree_state(tmp_path)) == []


def test_read_only_output_is_found_before_the_work(small_mount, tmp_path, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    ct = small_ct(tmp_path / "ct.nii.gz")
    before = tree_state(tmp_path)
    for args in (["segment", ct, "-o", small_mount / "o.nii.gz", *M],
                 ["decompose", "fixture-3mm", "--df", "0.5", "-o", small_mount / "m.pt"],
                 ["export", "fixture-3mm", "-o", small_mount / "e"],
                 ["build", "fixture-3mm", "-o", small_mount / "b"],
                 ["finetune", "fixture-3mm", "--df", "0.5", ct, "--distill", "-o", small_mount / "ft"]):
        code, err = _run_in_process(args, capsys)
        _check_one_line(code, err, 1, "Read-only file system")
    assert changes(before, tree_state(tmp_path)) == []


def test_hostile_class_and_case_names_stay_inside_the_output(tmp_path, capsys):
    """Class names from dataset.json and case names become file names only after sanitising: ``../../x`` cannot
    leave ``-o``; spaces and non-ASCII letters in paths work."""
    model = model_copy(tmp_path / "model")
    dataset = json.loads((model / "dataset.json").read_text())
    names = list(dataset["labels"])
    hostile = {names[1]: "../../x", names[2]: "/etc/passwd", names[3]: "a b ü\\c", names[4]: ".."}
    dataset["labels"] = {hostile.get(k, k): v for k, v in dataset["labels"].items()}
    (model / "dataset.json").write_text(json.dumps(dataset))
    cases = tmp_path / "cases ü"
    small_ct(cases / "patient 1 ü.nii.gz")
    out = tmp_path / "out"
    before = tree_state(tmp_path)
    code, err = _run_in_process(["segment", cases, "-o", out, "--masks", "--model", model], capsys)
    assert code == 0, err
    added = changes(before, tree_state(tmp_path))
    assert added and all(c.startswith("+out") for c in added), added
    masks = sorted(p.name for p in (out / "patient_1_u").iterdir() if not p.name.startswith("."))
    assert {"x.nii.gz", "etc_passwd.nii.gz", "a_b_u_c.nii.gz", "label_4.nii.gz"} <= set(masks)
    assert len(masks) == len(names) - 1
    summary = json.loads((out / "segment_summary.json").read_text())
    assert summary["cases"][0]["status"] == "ok" and summary["failed"] == 0


def test_download_checks_sha256_and_unpacks_only_inside(tmp_path, monkeypatch):
    """--download: a pinned or given sha256 that differs refuses the archive; members that would resolve
    outside the weights folder (``../``, absolute, a prefix look-alike) are skipped."""
    import hashlib
    import zipfile

    from tuckertrt.models import totalseg

    model = totalseg.TS_MODELS[297]
    served = tmp_path / "served"
    served.mkdir()
    archive = served / f"{model.folder}.zip"
    source = model_copy(tmp_path / "src")
    with zipfile.ZipFile(archive, "w") as z:
        for f in source.rglob("*"):
            if f.is_file():
                z.write(f, f"{model.folder}/{model.trainer}__nnUNetPlans__3d_fullres/{f.relative_to(source)}")
        z.writestr(f"{model.folder}/../escaped.txt", "outside")
        z.writestr(f"{model.folder}/../{model.folder}-lookalike/x.txt", "outside")
    monkeypatch.setenv("TUCKERTRT_WEIGHTS_URL", served.as_uri())
    monkeypatch.setattr(totalseg, "_USER_SHA256", {})
    root = tmp_path / "weights"
    with pytest.raises(TuckerTRTError, match="checksum mismatch"):
        totalseg.download(model, root, expected_sha256="0" * 64)
    assert not (root / model.folder).exists() and not [p for p in root.iterdir()]
    monkeypatch.setitem(totalseg.PINNED_SHA256, 297, "1" * 64)
    with pytest.raises(TuckerTRTError, match="checksum mismatch"):
        totalseg.download(model, root)
    totalseg.expect_sha256((f"297={hashlib.sha256(archive.read_bytes()).hexdigest()}",))
    folder = totalseg.download(model, root)
    assert (folder / "plans.json").is_file() and (root / model.folder / ".tuckertrt").is_file()
    assert sorted(p.name for p in root.iterdir()) == [model.folder]
    assert not (tmp_path / "escaped.txt").exists()
