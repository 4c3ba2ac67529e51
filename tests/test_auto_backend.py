"""``--backend auto``: export on first use, choose the fastest faithful runtime, cache it, reuse it, and never trust
a damaged cache entry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tuckertrt.backends.registry import open_backend
from tuckertrt.inference.labels import agreement, argmax_labels, output_labels
from tuckertrt.inference.patches import default_patch
from tuckertrt.models import load_model
from tuckertrt.bench.auto_backend import CHOICE_FILE, cache_root, entry_path, open_auto


@pytest.fixture(scope="module")
def model():
    return load_model("fixture-3mm")


@pytest.fixture(scope="module")
def first(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return root, open_auto(model, root)


def _snapshot(entry):
    return {p.relative_to(entry): (p.stat().st_mtime_ns, p.stat().st_ino) for p in entry.rglob("*")}


def test_cache_folder_follows_option_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TUCKERTRT_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "option") == tmp_path / "option"
    monkeypatch.delenv("TUCKERTRT_CACHE")
    assert cache_root().parts[-2:] == (".cache", "tuckertrt")


def test_first_use_exports_checks_and_records_why(model, first):
    root, auto = first
    assert auto.exported and auto.rebuilt_because is None
    assert auto.entry == entry_path(model, root) and auto.entry.parent.parent == root
    record = json.loads((auto.entry / CHOICE_FILE).read_text())
    chosen = record["choice"]
    assert (chosen["backend"], chosen["precision"]) == (auto.choice.backend, auto.choice.precision)
    assert chosen["backend"] in ("openvino", "onnxruntime") and "fastest of" in chosen["reason"]
    timed = [c for c in chosen["candidates"] if c.get("passes")]
    assert timed and min(timed, key=lambda c: c["median_s"])["backend"] == chosen["backend"]
    assert record["export_seconds"] > 0 and record["runtime"]["versions"]["onnxruntime"]
    assert not [p for p in root.rglob(".*") if p.name != ".tuckertrt"]  # no temporary folder left (the marker is ours)
    # the chosen runtime reproduces PyTorch on the example-CT patch
    patch, _ = default_patch(model.spec)
    reference = argmax_labels(open_backend("torch", model, device="cpu").run(patch))
    backend = auto.runner.predictor
    assert agreement(reference, output_labels(backend, backend.run(patch))) > 0.995


def test_second_use_reuses_the_entry_without_exporting(model, first):
    root, auto = first
    before = _snapshot(auto.entry)
    again = open_auto(model, root)
    assert not again.exported and again.entry == auto.entry
    assert (again.choice.backend, again.choice.precision) == (auto.choice.backend, auto.choice.precision)
    assert _snapshot(auto.entry) == before  # nothing rewritten


def test_other_weights_get_their_own_entry(model, first):
    from tuckertrt.decomposition import decompose

    root, auto = first
    assert entry_path(decompose(model, df=0.9), root) != auto.entry


@pytest.mark.parametrize("damage", ["truncated onnx", "choice not json", "choice missing"])
def test_a_damaged_entry_is_rebuilt_not_trusted(model, tmp_path, damage):
    auto = open_auto(model, tmp_path)
    onnx = auto.entry / "onnx" / "model.onnx"
    if damage == "truncated onnx":
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    elif damage == "choice not json":
        (auto.entry / CHOICE_FILE).write_text("{half")
    else:
        (auto.entry / CHOICE_FILE).unlink()
    messages: list[str] = []
    rebuilt = open_auto(model, tmp_path, log=messages.append)
    assert rebuilt.exported and rebuilt.rebuilt_because and "rebuilding" in messages[0]
    assert json.loads((rebuilt.entry / CHOICE_FILE).read_text())["choice"]["backend"] == rebuilt.choice.backend
    patch = np.zeros((1, 1, *model.spec.patch_size), np.float32)
    assert rebuilt.runner.predict(patch).shape[0] == 1
    assert sorted(p.name for p in rebuilt.entry.parent.iterdir()) == [rebuilt.entry.name]  # nothing left aside


def test_segment_defaults_to_auto_and_reuses_the_cache(tmp_path, capsys, write_ct):
    from tests.test_segment_cli import run_cli, small_ct

    ct = small_ct(write_ct)
    cache = tmp_path / "cache"
    outputs = []
    for name in ("first", "second"):
        code, stdout, err = run_cli([ct, "-o", tmp_path / f"{name}.nii.gz", "--model", "fixture-3mm",
                                     "--cache-dir", cache], capsys)
        assert code == 0, err
        outputs.append(stdout)
    assert "exported and measured" in outputs[0] and "first use" in outputs[0]
    assert "cached, opened" in outputs[1] and "exported" not in outputs[1]
    sidecar = json.loads((tmp_path / "second.json").read_text())
    assert sidecar["runners"][0]["backend"] in ("openvino", "onnxruntime")
    assert sidecar["runners"][0]["cache_entry"].startswith(str(cache))


def test_runtime_options_without_a_backend(tmp_path, capsys, write_ct):
    """--artifacts needs an explicit backend; --device/--precision keep their old meaning (eager PyTorch) with a
    deprecation warning, so existing scripts keep working."""
    from tests.test_segment_cli import run_cli, small_ct

    ct = small_ct(write_ct)
    code, _, err = run_cli([ct, "-o", tmp_path / "x.nii.gz", "--model", "fixture-3mm", "--artifacts",
                            tmp_path / "export"], capsys)
    assert code == 2 and err.count("\n") == 1 and "explicit --backend" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]
    code, _, err = run_cli([ct, "-o", tmp_path / "y.nii.gz", "--model", "fixture-3mm", "--device", "cpu"], capsys)
    assert code == 0 and "deprecated" in err, err
    assert json.loads((tmp_path / "y.json").read_text())["runners"][0]["backend"] == "torch"
