"""The package's structure: imports follow the layer order (import-linter), backend names live in one registry."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tuckertrt.backends.registry import AUTO, BACKENDS, backend_class, open_backend

CHECKOUT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layer_order():
    """``lint-imports`` with the contract in .importlinter: module- and function-level imports all count."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                             "--config", str(CHECKOUT / ".importlinter"), "--no-cache"], cwd=CHECKOUT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout
    assert "ignore_imports" not in (CHECKOUT / ".importlinter").read_text()  # no exceptions to the order


def test_every_runtime_is_in_the_registry_and_the_cli_lists_it_from_there():
    from tuckertrt.cli.segment import segment

    assert list(BACKENDS)[0] == "torch" and {"onnxruntime", "openvino", "tensorrt"} <= set(BACKENDS)
    for name in BACKENDS:
        cls = backend_class(name)
        assert cls.name == name and callable(cls.load) and isinstance(cls.available(), bool)
    option = next(p for p in segment.params if p.name == "backend")
    assert isinstance(option.type, click.Choice) and list(option.type.choices) == [AUTO, *BACKENDS]


def test_torch_opens_through_the_registry():
    import numpy as np

    from tests.helpers import small_loaded_model

    model = small_loaded_model()
    backend = open_backend("torch", model, device="cpu")
    patch = np.zeros((1, model.spec.input_channels, *model.spec.patch_size), np.float32)
    assert backend.run(patch).shape == (1, model.spec.num_classes, *model.spec.patch_size)
    assert backend.describe()["backend"] == "torch" and backend.input_shape == patch.shape


def test_ranks_option_absent_parses_to_none():
    from tuckertrt.decomposition.ranks import rank_spec

    assert rank_spec(None, object()) is None
