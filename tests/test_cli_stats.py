"""The CLI over the foundation: stats, decompose, and one-line errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import small_loaded_model
from tuckertrt.models.checkpoint import save_results_folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuckertrt", *args], capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int | None = None, match: str = "") -> None:
    assert result.returncode != 0 if code is None else result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), result.stderr
    assert match in lines[0]


def test_help_and_version():
    assert "stats" in run_cli("--help").stdout
    assert run_cli("--version").stdout.strip().startswith("tuckertrt, version")


def test_stats_json_on_preset():
    result = run_cli("stats", "ts-3mm", "--df", "0.3", "--policy", "paper", "--json")
    report = json.loads(result.stdout)
    assert round(report["params"] / 1e6, 6) == 1.981569 and round(report["gmacs"], 3) == 56.291
    assert round(report["gmacs_original"], 3) == 369.144 and report["patch"] == [112, 112, 128]
    layer = report["layers"][0]
    assert {"name", "kind", "in_channels", "out_channels", "ranks", "params_original", "params"} <= set(layer)


def test_stats_table_and_decompose(tmp_path):
    folder = save_results_folder(small_loaded_model(), tmp_path / "D" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    table = run_cli("stats", str(folder), "--df", "0.5")
    assert table.returncode == 0 and "total params" in table.stdout
    out = tmp_path / "small_df05.pt"
    assert run_cli("decompose", str(folder), "--df", "0.5", "-o", str(out)).returncode == 0
    again = json.loads(run_cli("stats", str(out), "--json").stdout)
    assert again["params"] == json.loads(run_cli("stats", str(folder), "--df", "0.5", "--json").stdout)["params"]


@pytest.mark.parametrize("args,code,match", [
    (("stats", "ts-3mm", "--df", "0"), 2, "--df must be in (0, 1]"),
    (("stats", "ts-3mm", "--df", "1.5"), 2, "--df must be in (0, 1]"),
    (("stats", "ts-3mm", "--min-rank", "x"), 2, "--min-rank must be a positive integer"),
    (("stats", "/nonexistent/model"), 1, "model not found"),
])
def test_bad_input_is_one_line(args, code, match):
    assert_one_line_error(run_cli(*args), code, match)


def test_bad_checkpoint_and_nothing_written(tmp_path):
    folder = save_results_folder(small_loaded_model(), tmp_path / "D" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    (folder / "fold_0" / "checkpoint_final.pth").write_text("garbage")
    out = tmp_path / "out.pt"
    assert_one_line_error(run_cli("decompose", str(folder), "--df", "0.5", "-o", str(out)), 1, "checkpoint")
    assert not out.exists() and not list(tmp_path.glob(".out.pt*"))
