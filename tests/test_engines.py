"""Engines without a GPU: real TensorRT-RTX ahead-of-time builds of the decomposed TS-3mm graph, sidecars,
compatibility decisions on real sidecars, and the CLI's one-line errors (no half-written engine left behind)."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tuckertrt.cli import main
from tuckertrt.engines import (BuildOptions, RuntimeFacts, build_engine, compatibility_problems, engine_support,
                               read_sidecar, sidecar_path)
from tuckertrt.engines.gpu import current_gpu
from tuckertrt.engines.naming import engine_filename
from tuckertrt.errors import TuckerTRTError
from tuckertrt.fileio import sha256_file

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
pytestmark = pytest.mark.skipif(not HAS_RTX, reason="TensorRT-RTX (pip install 'tuckertrt[rtx]') builds the engines")
if HAS_RTX:
    import tensorrt_rtx

    RTX = tuple(int(p) for p in tensorrt_rtx.__version__.split(".")[:2])
    ALL_RTX_SMS = sorted(int(n[2:]) for n in tensorrt_rtx.ComputeCapability.__members__ if n[2:].isdigit())
PATCH = (32, 32, 32)  # the network downsamples 16x: the smallest cube is 16³; 32³ keeps every stage non-trivial


def export_decomposed_ts3mm(root: Path, patch: tuple[int, ...]) -> Path:
    """The TS-3mm network decomposed at DF 0.3, exported (FP32 + FP16 + manifest) at ``patch``."""
    from tuckertrt.decomposition import decompose
    from tuckertrt.parity.export import export_model
    from tuckertrt.models import load_model

    out = root / "ts-3mm_df0.3"
    export_model(decompose(load_model("ts-3mm"), df=0.3), out, patch=patch, verify=False)
    return out


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_decomposed_ts3mm(tmp_path_factory.mktemp("export"), PATCH)


@pytest.fixture(scope="module")
def rtx_fp16(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FP16 engine built through the CLI for every compute capability TensorRT-RTX supports."""
    out = tmp_path_factory.mktemp("engines")
    run_cli(["engine", str(export_dir), "--fp16", "--target", "rtx", "-o", str(out)])
    (engine,) = out.glob("*.engine")
    return engine


@pytest.fixture(scope="module")
def rtx_fp32(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(export_dir, tmp_path_factory.mktemp("engines32"), BuildOptions(target="rtx", sms=(86,))).engine


def run_cli(args: list[str], expect: int = 0, capsys: pytest.CaptureFixture | None = None) -> str:
    """Run ``tuckertrt ARGS`` in-process like the console script; return stderr (when captured)."""
    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code or 0
    assert code == expect, f"tuckertrt {' '.join(args)} exited {code}, expected {expect}"
    return capsys.readouterr().err if capsys else ""


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_no_engine_left(directory: Path) -> None:
    """No engine, sidecar or temporary ``.part`` file in ``directory`` (which may not even exist)."""
    assert not directory.exists() or not [p.name for p in directory.iterdir() if ".engine" in p.name]


# --- builds ---------------------------------------------------------------------------------------------------

def test_rtx_fp16_build_of_decomposed_ts3mm(rtx_fp16: Path, export_dir: Path) -> None:
    sidecar = read_sidecar(rtx_fp16)
    assert rtx_fp16.name == f"ts-3mm_df0.3_fp16_sm{'-'.join(map(str, ALL_RTX_SMS))}_trtrtx{RTX[0]}.{RTX[1]}.engine"
    assert sidecar["compute_capabilities"] == ALL_RTX_SMS  # FP16 3D convs compile for Turing too
    assert sidecar["precision"] == "fp16" and sidecar["target"] == "rtx"
    assert sidecar["model"] == "ts-3mm" and sidecar["df"] == 0.3
    assert sidecar["spec"]["num_classes"] == 118 and sidecar["spec"]["intensity"]
    assert sidecar["gpu"] == "ahead-of-time, no GPU"
    assert sidecar["input"] == {"name": "input", "shape": [1, 1, *PATCH], "dtype": "float"}
    assert sidecar["outputs"][0]["shape"] == [1, 118, *PATCH]
    assert sidecar["source_onnx_sha256"] == sha256_file(export_dir / "model_fp16.onnx")
    assert sidecar["engine_sha256"] == sha256_file(rtx_fp16) and sidecar["engine_bytes"] == rtx_fp16.stat().st_size
    assert sidecar["flags"]["strongly_typed"] is True and sidecar["profile"] is None
    assert sidecar["tensorrt"]["package"] == "tensorrt_rtx" and sidecar["tensorrt"]["major_minor"] == list(RTX)
    assert sidecar["build_seconds"] > 0  # recorded; how long builds take is benchmarks/engine_latency.py's job
    assert {p.name for p in rtx_fp16.parent.iterdir()} == {rtx_fp16.name, sidecar_path(rtx_fp16).name}


def test_fp32_engine_is_larger_and_skips_turing(rtx_fp16: Path, export_dir: Path, tmp_path: Path) -> None:
    fp32 = build_engine(export_dir, tmp_path, BuildOptions(target="rtx"))
    assert fp32.sidecar["precision"] == "fp32"
    assert fp32.sidecar["compute_capabilities"] == [sm for sm in ALL_RTX_SMS if sm >= 80]  # no FP32 3D conv on SM75
    assert fp32.engine.stat().st_size > 1.3 * rtx_fp16.stat().st_size


def test_single_fp32_onnx_is_converted_for_fp16(export_dir: Path, tmp_path: Path) -> None:
    onnx_file = tmp_path / "net.onnx"
    shutil.copy(export_dir / "model.onnx", onnx_file)  # no manifest beside it: name from the file, DF unknown
    result = build_engine(onnx_file, tmp_path / "out", BuildOptions(target="rtx", fp16=True, sms=(89,)))
    assert result.engine.name == f"net_dfNA_fp16_sm89_trtrtx{RTX[0]}.{RTX[1]}.engine"
    assert result.sidecar["converted_to_fp16"] and result.sidecar["source_onnx_sha256"] == sha256_file(onnx_file)
    assert not list(tmp_path.glob("*fp16*.onnx"))  # the conversion lived in a scratch dir


def test_dynamic_batch_gets_a_profile(tmp_path: Path) -> None:
    from tests.helpers import small_loaded_model
    from tuckertrt.parity.export import export_model

    export_model(small_loaded_model(), tmp_path / "small", patch=PATCH, dynamic_batch=2, fp16=False,
                 simplifier="none", verify=False)
    result = build_engine(tmp_path / "small", tmp_path, BuildOptions(target="rtx", sms=(120,), max_batch=2))
    assert result.sidecar["profile"] == {"input": {"min": [1, 1, *PATCH], "opt": [1, 1, *PATCH],
                                                   "max": [2, 1, *PATCH]}}
    assert result.sidecar["input"]["shape"] == [-1, 1, *PATCH]


def test_inspect_prints_sidecar_and_json(rtx_fp16: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli(["inspect", str(rtx_fp16)])
    out = capsys.readouterr().out
    assert "ahead-of-time, no GPU" in out and "match the sidecar's sha256" in out and "SM86" in out
    run_cli(["inspect", str(rtx_fp16), "--json", "--for-sm", "8.6"])
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["compatibility"]["compatible"] is True
    assert report["sidecar"]["engine_sha256"] == sha256_file(rtx_fp16)


def test_engine_support() -> None:
    ok, reason = engine_support("rtx")
    assert ok and "SM86" in reason
    ok, reason = engine_support("trt")
    assert not ok if importlib.util.find_spec("tensorrt") is None else isinstance(ok, bool)
    assert reason


def test_engine_filename_flags() -> None:
    assert engine_filename("ts-3mm", None, "fp32", [90], "trt", (10, 13)) == "ts-3mm_dfNA_fp32_sm90_trt10.13.engine"
    assert engine_filename("total 3mm", 1, "fp16", [86], "trt", (11, 4), "ampere+", True) == \
        "total-3mm_df1.0_fp16_sm86_trt11.4_ampere+_vc.engine"


# --- compatibility decisions on real sidecars, simulated runtimes ---------------------------------------------

def test_compatibility_of_rtx_engine(rtx_fp32: Path) -> None:
    sidecar = read_sidecar(rtx_fp32)  # built for SM86 only
    assert compatibility_problems(sidecar, RuntimeFacts("rtx", RTX, 86)) == []
    (problem,) = compatibility_problems(sidecar, RuntimeFacts("rtx", RTX, 89, "RTX 4090"))
    assert problem == "a GPU of SM86, found SM89 (RTX 4090)"
    (problem,) = compatibility_problems(sidecar, RuntimeFacts("rtx", (RTX[0], RTX[1] + 1), 86))
    assert f"tensorrt_rtx {RTX[0]}.{RTX[1]}, found {RTX[0]}.{RTX[1] + 1}" in problem
    assert compatibility_problems(sidecar, RuntimeFacts("rtx", RTX, None)) == ["a GPU of SM86, found no CUDA GPU"]
    assert "needs tensorrt_rtx, found tensorrt" in compatibility_problems(sidecar, RuntimeFacts("trt", (10, 13), 86))[0]


def test_compatibility_flags_widen_what_runs(rtx_fp32: Path) -> None:
    sidecar = read_sidecar(rtx_fp32)
    full_trt = {**sidecar, "target": "trt", "tensorrt": {**sidecar["tensorrt"], "major_minor": [10, 13]},
                "compute_capabilities": [86], "flags": {**sidecar["flags"], "hardware_compat": "ampere+",
                                                        "version_compatible": True}}
    assert compatibility_problems(full_trt, RuntimeFacts("trt", (10, 15), 120)) == []
    assert compatibility_problems(full_trt, RuntimeFacts("trt", (10, 12), 86))  # older than the builder
    assert compatibility_problems(full_trt, RuntimeFacts("trt", (11, 0), 86))  # another major version
    (problem,) = compatibility_problems(full_trt, RuntimeFacts("trt", (10, 13), 75))
    assert problem == "a GPU of SM80 or newer (hardware compatibility ampere+), found SM75"


# --- bad input: one-line errors, non-zero exits, nothing half-written -----------------------------------------

def test_corrupt_engine_is_refused(rtx_fp32: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tuckertrt.backends.trt_runner import TensorRTBackend

    engine = tmp_path / rtx_fp32.name
    shutil.copy(rtx_fp32, engine)
    shutil.copy(sidecar_path(rtx_fp32), sidecar_path(engine))
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    assert_one_line_error(run_cli(["inspect", str(engine)], 1, capsys), "corrupt", engine.name)
    with pytest.raises(TuckerTRTError, match="corrupt"):
        TensorRTBackend.load(engine)
    sidecar_path(engine).unlink()
    assert_one_line_error(run_cli(["inspect", str(engine)], 1, capsys), "has no sidecar")


@pytest.mark.skipif(current_gpu() is not None, reason="this machine has a CUDA GPU")
def test_backend_without_gpu_says_why(rtx_fp32: Path) -> None:
    from tuckertrt.backends.trt_runner import TensorRTBackend

    with pytest.raises(TuckerTRTError, match="cuda-python is not installed|found no CUDA GPU"):
        TensorRTBackend.load(rtx_fp32)


def test_engine_for_another_gpu_is_refused(rtx_fp32: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_cli(["inspect", str(rtx_fp32), "--for-sm", "90"], 1, capsys)
    assert_one_line_error(err, "expected a GPU of SM86, found SM90")


def test_hopper_is_not_an_rtx_target(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_cli(["engine", str(export_dir), "--target", "rtx", "--sm", "90", "-o", str(tmp_path)], 2, capsys)
    assert_one_line_error(err, "cannot build for SM90", "Hopper", "--target trt")
    assert_no_engine_left(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="full TensorRT is installed here")
def test_missing_tensorrt(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = run_cli(["engine", str(export_dir), "-o", str(tmp_path / "out")], 1, capsys)
    assert_one_line_error(err, "tensorrt is not installed", "tuckertrt[trt]")
    assert not (tmp_path / "out").exists()


def test_unsupported_op_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    node = helper.make_node("TuckerMagic", ["input"], ["logits"], domain="org.example")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.example", 1)])
    onnx.save(model, tmp_path / "bad.onnx")
    out = tmp_path / "engines"
    err = run_cli(["engine", str(tmp_path / "bad.onnx"), "--target", "rtx", "--sm", "86", "-o", str(out)], 1, capsys)
    assert_one_line_error(err, "ONNX parser rejected bad.onnx", "TuckerMagic")
    assert_no_engine_left(out)


def test_bad_arguments(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert_one_line_error(run_cli(["engine", str(tmp_path / "missing.onnx"), "--target", "rtx"], 1, capsys),
                          "not found")
    assert_one_line_error(run_cli(["engine", str(export_dir), "--target", "rtx", "--opt-level", "7"], 2, capsys),
                          "--opt-level must be 0-5")
    assert_one_line_error(run_cli(["engine", str(export_dir), "--target", "rtx", "--sm", "8.x"], 2, capsys),
                          "not a compute capability")
    assert_one_line_error(run_cli(["engine", str(export_dir), "--target", "rtx", "--timing-cache",
                                   str(tmp_path / "tc")], 2, capsys), "no timing cache")
    assert_one_line_error(run_cli(["engine", str(export_dir), "--target", "rtx", "--hardware-compat", "ampere+"],
                                  2, capsys), "--sm")
    assert_one_line_error(run_cli(["engine", str(export_dir), "--target", "rtx", "--sm", "75", "-o",
                                   str(tmp_path)], 2, capsys), "FP32 3D convolutions", "SM75")
    assert_no_engine_left(tmp_path)
