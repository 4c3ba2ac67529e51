"""``tuckertrt serve``: a real tritonserver (PyTriton) on CPU, the fixture model, requests over HTTP and gRPC."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import run_main
from tests.conftest import blob_ct

pytest.importorskip("pytriton")
http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tuckertrt.errors import TuckerTRTError  # noqa: E402
from tuckertrt.serving import protocol as p  # noqa: E402
from tuckertrt.serving.process import ServerProcess  # noqa: E402

EXAMPLE_CT = Path(__file__).resolve().parents[1] / "tuckertrt" / "data" / "examples" / "example_ct.nii.gz"
MAX_VOXELS = 2_000_000  # the example CT has 1.38 M voxels


def start(log: Path, cache: Path) -> ServerProcess:
    """``serve fixture-3mm`` with no --backend (auto), caching under ``cache``."""
    try:
        server = ServerProcess("fixture-3mm", log, ("--max-voxels", str(MAX_VOXELS), "--cache-dir", str(cache)))
    except TuckerTRTError as e:
        pytest.fail(str(e))
    server.cache = cache
    server.client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}", network_timeout=600.0)
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    server = start(folder / "serve.log", folder / "cache")
    yield server
    server.client.close()
    server.stop()


def cache_state(cache: Path) -> dict:
    return {p.relative_to(cache): (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*")}


run_cli = run_main


def small_case(tmp_path: Path, name: str = "small.nii.gz") -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(blob_ct((40, 36, 16), (20.0, 18.0, 8.0), 4.0).astype(np.int16),
                             np.diag([3.0, 3.0, 3.0, 1.0])), path)
    return path


def infer(server: ServerProcess, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in tensors.items():
        t = http.InferInput(name, list(array.shape), {np.float32: "FP32", np.int16: "INT16", np.float64: "FP64",
                                                      np.uint8: "UINT8"}[array.dtype.type])
        t.set_data_from_numpy(array)
        inputs.append(t)
    result = server.client.infer(p.MODEL_NAME, inputs)
    return {name: result.as_numpy(name) for name in (p.LABELS, p.CLASS_NAMES, p.INFO)}


def assert_still_serving(server: ServerProcess) -> None:
    volume = blob_ct((40, 36, 16), (20.0, 18.0, 8.0), 4.0).astype(np.int16)
    answer = infer(server, {p.VOLUME_INT16: volume, p.AFFINE: np.diag([3.0, 3.0, 3.0, 1.0])})
    assert answer[p.LABELS].shape == volume.shape and answer[p.LABELS].max() > 0


def test_health_readiness_metrics_and_config(server):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{p.MODEL_NAME}/ready"):
        assert urllib.request.urlopen(server.url + path).status == 200
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    assert f'nv_inference_request_success{{model="{p.MODEL_NAME}"' in metrics
    config = server.client.get_model_config(p.MODEL_NAME)
    assert {i["name"]: i["data_type"] for i in config["input"]} == {
        "volume": "TYPE_FP32", "volume_int16": "TYPE_INT16", "affine": "TYPE_FP64", "case_id": "TYPE_UINT8"}
    names = json.loads(config["parameters"][p.CLASS_NAMES_PARAMETER]["string_value"])
    assert names["1"] == "spleen" and len(names) == 61


def test_served_result_is_what_local_segment_writes(server, tmp_path, capsys):
    # both with no --backend: auto, resolved from the same cache, so the same runtime
    code, out, err = run_cli(["segment", EXAMPLE_CT, "-o", tmp_path / "local", "--model", "fixture-3mm",
                              "--cache-dir", server.cache], capsys)
    assert code == 0, err
    assert "cached, opened" in out  # the server's start exported and measured; segment reuses its entry
    code, out, err = run_cli(["segment", EXAMPLE_CT, "-o", tmp_path / "served", "--server", server.url], capsys)
    assert code == 0, err
    local, served = (nib.load(tmp_path / d / "example_ct.nii.gz") for d in ("local", "served"))
    assert served.get_data_dtype() == local.get_data_dtype()
    assert np.array_equal(np.asarray(served.dataobj), np.asarray(local.dataobj))
    assert np.array_equal(served.affine, local.affine)
    sidecars = [json.loads((tmp_path / d / "example_ct.json").read_text()) for d in ("local", "served")]
    assert sidecars[1]["labels"] == sidecars[0]["labels"] and sidecars[1]["present"] == sidecars[0]["present"]
    assert len(sidecars[0]["present"]) > 20
    assert sidecars[1]["source"] == str(EXAMPLE_CT)
    local_runner, served_runner = (sidecar["runners"][0] for sidecar in sidecars)
    assert served_runner["backend"] in ("openvino", "onnxruntime")
    assert (served_runner["backend"], served_runner["cache_entry"]) == (local_runner["backend"],
                                                                       local_runner["cache_entry"])
    assert served_runner["cache_entry"].startswith(str(server.cache))
    # the server logs the case id and timings, never voxel values
    log = server.log.read_text(errors="replace")
    assert "case=example_ct shape=122x101x112 segmented in" in log


def test_a_folder_over_grpc_with_masks_and_a_bad_case(server, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    small_case(cases, "a.nii.gz")
    small_case(cases, "b.nii.gz")
    (cases / "c.nii.gz").write_bytes(b"not a NIfTI")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["segment", cases, "-o", out, "--server", f"grpc://127.0.0.1:{server.grpc_port}",
                                 "--masks", "--concurrency", "2"], capsys)
    assert code == 1 and "c: FAILED" in err and "1 of 3 cases failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a", "a.json", "a.nii.gz", "b", "b.json", "b.nii.gz"]
    assert len(list((out / "a").glob("*.nii.gz"))) == 61


@pytest.mark.parametrize("kind", ["fp64", "rank2", "over_limit", "nan", "no_affine", "two_volumes"])
def test_malformed_tensors_get_a_clear_error_and_the_server_goes_on(server, kind):
    eye = np.eye(4)
    tensors = {
        "rank2": {p.VOLUME: np.zeros((8, 8), np.float32), p.AFFINE: eye},
        "over_limit": {p.VOLUME_INT16: np.full((130, 130, 130), -1000, np.int16), p.AFFINE: eye},
        "nan": {p.VOLUME: np.full((8, 8, 8), np.nan, np.float32), p.AFFINE: eye},
        "no_affine": {p.VOLUME: np.full((8, 8, 8), -1000, np.float32)},
        "two_volumes": {p.VOLUME: np.full((8, 8, 8), -1000, np.float32),
                        p.VOLUME_INT16: np.full((8, 8, 8), -1000, np.int16), p.AFFINE: eye},
    }.get(kind)
    expected = {"fp64": "expects 'FP32'", "rank2": "unexpected shape", "over_limit": "over the server's limit",
                "nan": "NaN or infinite", "no_affine": "affine", "two_volumes": "exactly one of"}[kind]
    if kind == "fp64":
        t = http.InferInput(p.VOLUME, [8, 8, 8], "FP64")
        t.set_data_from_numpy(np.zeros((8, 8, 8)))
        a = http.InferInput(p.AFFINE, [4, 4], "FP64")
        a.set_data_from_numpy(eye)
        with pytest.raises(InferenceServerException) as error:
            server.client.infer(p.MODEL_NAME, [t, a])
    else:
        with pytest.raises(InferenceServerException) as error:
            infer(server, tensors)
    message = error.value.message()
    assert expected in message and "Traceback" not in message and "model.py" not in message, message
    assert_still_serving(server)


@pytest.mark.parametrize("kind", ["10GB_shape_header", "garbage_bytes"])
def test_malformed_http_bodies_are_refused_before_allocation(server, kind):
    if kind == "garbage_bytes":
        body, headers = np.random.default_rng(0).bytes(4096), {}
    else:  # declares a 2048x2048x1280 int16 volume (10.7 GB) and sends 16 bytes
        header = json.dumps({"inputs": [
            {"name": p.VOLUME_INT16, "shape": [2048, 2048, 1280], "datatype": "INT16",
             "parameters": {"binary_data_size": 16}},
            {"name": p.AFFINE, "shape": [4, 4], "datatype": "FP64", "data": np.eye(4).ravel().tolist()}]}).encode()
        body, headers = header + bytes(16), {"Inference-Header-Content-Length": str(len(header))}
    request = urllib.request.Request(f"{server.url}/v2/models/{p.MODEL_NAME}/infer", data=body, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert error.value.code in (400, 500)
    message = json.loads(error.value.read())["error"]
    if kind == "garbage_bytes":
        assert "failed to parse" in message, message
    else:  # refused on the declared size (2048 * 2048 * 1280 * 2 bytes), before anything of that size exists
        assert "10737418240" in message and "Traceback" not in message, message
    assert_still_serving(server)


def test_a_second_start_reuses_the_cache(server, tmp_path):
    first = server.log.read_text(errors="replace")
    assert "first use of fixture-3mm" in first and first.count("fixture-3mm: backend") == 1
    assert "exported and measured" in first
    before = cache_state(server.cache)
    entries = [p for p in server.cache.glob("*/*") if p.is_dir()]
    assert len(entries) == 1 and entries[0] / "choice.json" in [server.cache / p for p in before]
    second = start(tmp_path / "second.log", server.cache)
    try:
        assert_still_serving(second)
    finally:
        second.client.close()
        assert second.stop() == 0
    log = second.log.read_text(errors="replace")
    assert "cached, opened" in log and "exported" not in log and "first use" not in log, log
    assert log.count("fixture-3mm: backend") == 1 and str(entries[0]) in log
    assert cache_state(server.cache) == before  # nothing in the cache written again


def test_sigterm_stops_the_server_cleanly(server):
    children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout.split()
    assert children, "tritonserver runs as a child of serve"
    server.client.close()  # an open keep-alive connection would hold Triton's exit for its timeout
    assert server.stop() == 0
    time.sleep(2)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "/v2/health/live", timeout=5)
