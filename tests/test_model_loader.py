"""What ``serve`` and ``segment --ray`` load: ``--backend auto`` resolved once in the calling process and opened
elsewhere from the cache, ``--backend torch`` and the deprecated runtime options without a backend."""
from __future__ import annotations

import pickle

import pytest

from tuckertrt.cli.serve import model_loader
from tuckertrt.errors import UsageError

NO_DECOMPOSITION = (None, 8, "default", None)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    cache, messages = tmp_path_factory.mktemp("cache"), []
    loader = model_loader("fixture-3mm", NO_DECOMPOSITION, False, None, None, None, None, cache, threads=1,
                          log=messages.append)
    return cache, loader, messages


def test_auto_is_resolved_here_and_the_loader_opens_the_cached_entry(resolved):
    cache, loader, messages = resolved
    assert sum(": backend " in m for m in messages) == 1 and "exported and measured" in messages[-1]
    entries = [p for p in cache.glob("*/*") if p.is_dir()]
    assert len(entries) == 1
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entries[0].rglob("*")}
    (runner,) = pickle.loads(pickle.dumps(loader))()  # as a Ray worker receives and calls it
    facts = runner.describe()
    assert facts["backend"] in ("openvino", "onnxruntime") and facts["cache_entry"] == str(entries[0])
    assert facts["threads"] == 1
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entries[0].rglob("*")} == before


def test_an_entry_missing_where_the_loader_runs_is_one_clear_error(resolved, tmp_path):
    from dataclasses import replace

    from tuckertrt.errors import TuckerTRTError

    (cached,), threads = resolved[1].args
    elsewhere = replace(cached, entry=tmp_path / "not-mounted" / cached.entry.name)  # a node without the cache
    with pytest.raises(TuckerTRTError, match="every worker's machine reads"):
        elsewhere.open(threads)


def test_torch_stays_and_runtime_options_without_a_backend_mean_torch(capsys):
    (runner,) = model_loader("fixture-3mm", NO_DECOMPOSITION, False, "torch", None, None, None)()
    assert runner.describe()["backend"] == "torch"
    (runner,) = model_loader("fixture-3mm", NO_DECOMPOSITION, False, None, None, None, "cpu")()
    assert runner.describe()["backend"] == "torch" and "deprecated" in capsys.readouterr().err


def test_artifacts_need_an_explicit_backend(tmp_path):
    with pytest.raises(UsageError, match="explicit --backend"):
        model_loader("fixture-3mm", NO_DECOMPOSITION, False, None, tmp_path / "export", None, None)
