"""Loading nnU-Net v2 results folders (old and new plans), TotalSegmentator names, the weights download."""
from __future__ import annotations

import functools
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from tests.helpers import small_loaded_model
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models import load_model, load_models
from tuckertrt.models import totalseg
from tuckertrt.models.checkpoint import save_results_folder
from tuckertrt.models.plans import architecture, configuration


def _results_folder(root: Path, name: str = "Dataset999_Small", trainer: str = "nnUNetTrainer",
                    deep_supervision_heads: bool = True) -> tuple[Path, object]:
    model = small_loaded_model()
    folder = save_results_folder(model, root / name / f"{trainer}__nnUNetPlans__3d_fullres", trainer=trainer)
    return folder, model


def _same_output(a, b) -> bool:
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        return torch.equal(a.network(x), b.network(x))


def test_old_format_results_folder_loads(tmp_path):
    folder, model = _results_folder(tmp_path)
    loaded = load_model(folder)
    assert "architecture" not in json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert _same_output(loaded, model)
    assert loaded.spec.patch_size == (32, 32, 32) and loaded.spec.spacing == (3.0, 3.0, 3.0)
    assert loaded.spec.labels[1] == "class_1" and loaded.spec.intensity.lower < loaded.spec.intensity.upper
    assert loaded.checkpoint_sha256 and len(loaded.checkpoint_sha256) == 64
    # the deep-supervision heads a real checkpoint carries are part of the state dict
    assert any(k.startswith("decoder.seg_layers.0") for k in loaded.network.state_dict())


def test_new_format_plans_load_the_same_network(tmp_path):
    folder, model = _results_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    arch = architecture(configuration(plans))
    cfg = plans["configurations"]["3d_fullres"]
    for key in ("UNet_class_name", "UNet_base_num_features", "unet_max_num_features", "n_conv_per_stage_encoder",
                "n_conv_per_stage_decoder", "num_pool_per_axis", "pool_op_kernel_sizes", "conv_kernel_sizes"):
        del cfg[key]
    cfg["architecture"] = {"network_class_name": arch.class_path, "arch_kwargs": arch.kwargs,
                           "_kw_requires_import": list(arch.requires_import)}
    (folder / "plans.json").write_text(json.dumps(plans))
    assert _same_output(load_model(folder), model)


def test_module_prefixes_of_compiled_or_ddp_checkpoints_are_accepted(tmp_path):
    folder, model = _results_folder(tmp_path)
    ckpt_path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["network_weights"] = {f"_orig_mod.{k}": v for k, v in ckpt["network_weights"].items()}
    torch.save(ckpt, ckpt_path)
    assert _same_output(load_model(folder), model)


def test_plans_that_do_not_match_the_weights(tmp_path):
    folder, _ = _results_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["UNet_base_num_features"] = 16
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(TuckerTRTError, match="plans do not match the weights"):
        load_model(folder)


def test_corrupt_checkpoint(tmp_path):
    folder, _ = _results_folder(tmp_path)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(TuckerTRTError, match="not a readable PyTorch checkpoint"):
        load_model(folder)


def test_missing_folder_and_checkpoint(tmp_path):
    with pytest.raises(TuckerTRTError, match="model not found"):
        load_model(tmp_path / "missing")
    folder, _ = _results_folder(tmp_path)
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(TuckerTRTError, match="no checkpoint_final.pth"):
        load_model(folder)


def test_presets_have_the_ts_shapes():
    m = load_model("ts-3mm")
    assert m.spec.patch_size == (112, 112, 128) and m.spec.num_classes == 118 and not m.trained
    assert m.spec.labels[1] == "spleen" and m.spec.downsampling == (16, 16, 16)
    organs = load_model("ts-1.5mm")
    assert organs.spec.patch_size == (128, 128, 128) and organs.spec.num_classes == 25


# --- TotalSegmentator names ---------------------------------------------------------------------------------

def _install_ts(root: Path, dataset_id: int) -> Path:
    ts = totalseg.TS_MODELS[dataset_id]
    folder, _ = _results_folder(root, ts.folder, ts.trainer)
    return folder


def test_ts_names_resolve_under_totalseg_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    results = tmp_path / "nnunet" / "results"
    _install_ts(results, 297)
    assert load_model("total-3mm").name == "total-3mm:297"
    for i in (291, 292, 293, 294, 295):
        _install_ts(results, i)
    assert [m.name for m in load_models("total-1.5mm")] == [f"total-1.5mm:{i}" for i in range(291, 296)]
    with pytest.raises(TuckerTRTError, match="set of 5 models"):
        load_model("total-1.5mm")


def test_ts_weights_path_override_and_missing_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path))
    with pytest.raises(TuckerTRTError, match="--download"):
        load_model("total-6mm")
    _install_ts(tmp_path, 298)
    assert load_model("total-6mm").name == "total-6mm:298"


# --- the download, against a local HTTP server -------------------------------------------------------------

@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _release_zip(src_root: Path, dataset_id: int) -> bytes:
    ts = totalseg.TS_MODELS[dataset_id]
    _install_ts(src_root, dataset_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted((src_root / ts.folder).rglob("*")):
            z.write(p, p.relative_to(src_root))
    return buf.getvalue()


def test_download_from_release_url(tmp_path, http_dir, monkeypatch):
    served, url = http_dir
    ts = totalseg.TS_MODELS[297]
    (served / f"{ts.folder}.zip").write_bytes(_release_zip(tmp_path / "src", 297))
    weights = tmp_path / "weights"
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    monkeypatch.setenv("TUCKERTRT_WEIGHTS_URL", url)
    model = load_models("total-3mm", download=True)[0]
    assert model.name == "total-3mm:297"
    assert sorted(p.name for p in weights.iterdir()) == [ts.folder]  # no temp files left


def test_corrupt_download_leaves_nothing(tmp_path, http_dir, monkeypatch):
    served, url = http_dir
    ts = totalseg.TS_MODELS[297]
    (served / f"{ts.folder}.zip").write_bytes(b"PK\x03\x04 truncated")
    weights = tmp_path / "weights"
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    monkeypatch.setenv("TUCKERTRT_WEIGHTS_URL", url)
    with pytest.raises(TuckerTRTError, match="not a valid zip"):
        load_models("total-3mm", download=True)
    assert list(weights.iterdir()) == []


def test_checksum_mismatch_and_missing_file(tmp_path, http_dir, monkeypatch):
    served, url = http_dir
    ts = totalseg.TS_MODELS[297]
    (served / f"{ts.folder}.zip").write_bytes(_release_zip(tmp_path / "src", 297))
    monkeypatch.setenv("TUCKERTRT_WEIGHTS_URL", url)
    with pytest.raises(TuckerTRTError, match="checksum mismatch"):
        totalseg.download(ts, tmp_path / "w", expected_sha256="0" * 64)
    with pytest.raises(TuckerTRTError, match="cannot download"):
        totalseg.download(totalseg.TS_MODELS[298], tmp_path / "w")
    assert list((tmp_path / "w").iterdir()) == []
