"""``tuckertrt.bench.whole_ct`` with ``auto``: the run times what ``segment`` runs by default."""
from __future__ import annotations

import numpy as np
import nibabel as nib

from tests.helpers import run_main
from tests.test_segment_cli import small_ct
from tuckertrt.bench.whole_ct import run_whole_ct


def test_auto_times_the_cached_entry_segment_runs(tmp_path, capsys, write_ct, auto_backend_cache):
    ct = small_ct(write_ct)
    code, out, err = run_main(["segment", ct, "-o", tmp_path / "segment.nii.gz", "--model", "fixture-3mm"], capsys)
    assert code == 0, err
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in auto_backend_cache.rglob("*")}
    run = run_whole_ct(ct, "fixture-3mm", "auto", "-", "fp32", tmp_path / "bench.nii.gz")  # "-": the default cache
    chosen = out.split("fixture-3mm: backend ", 1)[1].split(" (", 1)[0]  # e.g. "openvino bf16"
    assert run.backend == "auto" and run.precision == chosen and run.tiles >= 1 and run.seconds > 0
    labels = [np.asarray(nib.load(tmp_path / name).dataobj) for name in ("segment.nii.gz", "bench.nii.gz")]
    assert labels[0].max() > 0 and np.array_equal(labels[0], labels[1])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in auto_backend_cache.rglob("*")} == before
