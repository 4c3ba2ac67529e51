"""Engines on a real GPU: build with full TensorRT, run through TensorRTBackend, compare with ONNX Runtime via
polygraphy, and let the real runtime refuse engines that do not fit. Run with ``scripts/gpu-check.sh``."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tuckertrt.engines import BuildOptions, build_engine, engine_support, read_sidecar, sidecar_path
from tuckertrt.engines.gpu import current_gpu, import_cudart
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import sha256_file
from tests.test_engines import export_decomposed_ts3mm

TRT_OK, TRT_REASON = engine_support("trt")
pytestmark = [
    pytest.mark.gpu, pytest.mark.tensorrt,
    pytest.mark.skipif(not TRT_OK, reason=f"needs a CUDA GPU and full TensorRT: {TRT_REASON}"),
    pytest.mark.skipif(import_cudart() is None, reason="needs cuda-python (pip install 'tuckertrt[trt]')"),
]
PATCH = (64, 64, 64)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_decomposed_ts3mm(tmp_path_factory.mktemp("export"), PATCH)


@pytest.fixture(scope="module")
def engines(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("engines")
    return {p: build_engine(export_dir, out, BuildOptions(fp16=p == "fp16")).engine for p in ("fp32", "fp16")}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnx_runtime(engines: dict[str, Path], export_dir: Path, precision: str) -> None:
    from tuckertrt.parity.engines import compare_engine

    result = compare_engine(engines[precision], export_dir)
    json.dumps(result)  # embeddable in a report
    assert result["passed"], result["stats"]
    assert result["precision"] == precision
    if precision == "fp16":
        assert result["stats"]["argmax_agreement"] >= 0.999


def test_sidecar_records_this_gpu(engines: dict[str, Path]) -> None:
    gpu = current_gpu()
    sidecar = read_sidecar(engines["fp32"])
    assert sidecar["compute_capabilities"] == [gpu.sm] and sidecar["gpu"]["name"] == gpu.name
    assert f"_sm{gpu.sm}_trt" in engines["fp32"].name


def test_backend_runs_and_times(engines: dict[str, Path]) -> None:
    from tuckertrt.backends import open_backend

    backend = open_backend("tensorrt", engines["fp16"])
    try:
        logits = backend.run(np.zeros((1, 1, *PATCH), np.float32))
        assert logits.shape == (1, 118, *PATCH) and logits.dtype == np.float32 and np.isfinite(logits).all()
        times = backend.time_execute(warmup=1, iterations=5)
        assert len(times) == 5 and min(times) > 0
        assert backend.describe()["precision"] == "fp16"
    finally:
        backend.close()


def _copy(engine: Path, to: Path) -> Path:
    copy = to / engine.name
    shutil.copy(engine, copy)
    shutil.copy(sidecar_path(engine), sidecar_path(copy))
    return copy


def test_runtime_refuses_engine_for_another_gpu(engines: dict[str, Path], tmp_path: Path) -> None:
    from tuckertrt.backends.trt_runner import TensorRTBackend

    engine = _copy(engines["fp32"], tmp_path)
    sidecar = read_sidecar(engine)
    other = 89 if current_gpu().sm != 89 else 86
    sidecar_path(engine).write_text(json.dumps({**sidecar, "compute_capabilities": [other]}))
    with pytest.raises(TuckerTRTError, match=f"expected a GPU of SM{other}, found SM{current_gpu().sm}"):
        TensorRTBackend.load(engine)


def test_undeserialisable_engine(engines: dict[str, Path], tmp_path: Path) -> None:
    from tuckertrt.backends.trt_runner import TensorRTBackend

    engine = _copy(engines["fp32"], tmp_path)
    engine.write_bytes(engine.read_bytes()[: engine.stat().st_size // 3])  # truncated, sidecar updated to match
    sidecar = read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({**sidecar, "engine_bytes": engine.stat().st_size,
                                                "engine_sha256": sha256_file(engine)}))
    with pytest.raises(TuckerTRTError, match="could not be deserialised"):
        TensorRTBackend.load(engine)


def test_timing_cache_and_portable_flags(export_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    options = BuildOptions(fp16=True, timing_cache=cache, hardware_compat="ampere+", version_compatible=True,
                           opt_level=2)
    first = build_engine(export_dir, tmp_path, options)
    assert cache.stat().st_size > 0 and first.engine.name.endswith("_ampere+_vc.engine")
    second = build_engine(export_dir, tmp_path / "again", options)  # loads the saved cache
    assert second.sidecar["flags"]["timing_cache"] == str(cache)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="TensorRT-RTX not installed")
def test_rtx_engine_runs_where_rtx_supports_the_gpu(export_dir: Path, tmp_path: Path) -> None:
    import tensorrt_rtx

    from tuckertrt.parity.engines import compare_engine
    from tuckertrt.engines.runtime import rtx_compute_capabilities

    sm = current_gpu().sm
    if sm not in rtx_compute_capabilities(tensorrt_rtx):
        pytest.skip(f"TensorRT-RTX {tensorrt_rtx.__version__} does not support SM{sm} (e.g. Hopper)")
    engine = build_engine(export_dir, tmp_path, BuildOptions(target="rtx", fp16=True, sms=(sm,))).engine
    assert compare_engine(engine, export_dir)["passed"]
