"""The benchmark harness: interleaved timing, profiles, parity gate, headline, report and the bench command."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.helpers import small_loaded_model
from tuckertrt.bench import BenchOptions, df_variants, run_bench
from tuckertrt.bench.parity import class_dice, dice_summary
from tuckertrt.inference.labels import agreement, argmax_labels
from tuckertrt.bench.profiles import layer_of, ort_profile, summarise
from tuckertrt.bench.report import markdown, profile_markdown
from tuckertrt.bench.timing import PeakRss, interleaved
from tuckertrt.cli import main
from tuckertrt.cli.bench import precisions_per_backend
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.serialize import save_decomposed
from tuckertrt.errors import UsageError
from tuckertrt.inference.patches import default_patch
from tuckertrt.parity.gate import ParityGate


def test_interleaved_rounds_alternate_and_report_median():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.01))}
    timings = interleaved(runners, rounds=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert timings["b"].minimum >= 0.01 and len(timings["a"].rounds) == 3  # b sleeps 10 ms each round
    assert timings["b"].minimum <= timings["b"].median <= timings["b"].maximum
    assert set(timings["a"].to_json()) >= {"median", "spread", "rounds"}
    with pytest.raises(ValueError):
        interleaved(runners, rounds=0)


def test_peak_rss_sees_a_large_allocation():
    with PeakRss(interval=0.001) as rss:
        block = np.ones(64 << 20, dtype=np.uint8)
        deadline = time.monotonic() + 30  # the sampling thread sees the block (no race on a busy machine)
        while rss.peak - rss.start < 60 << 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        del block
    assert rss.peak - rss.start >= 60 << 20


def test_layer_of_and_summarise():
    assert layer_of("/decoder/stages.3/convs/convs.0/all_modules/conv/core/Conv") == \
        "decoder.stages.3.convs.convs.0.all_modules.conv"
    assert layer_of("MVN_12") == "MVN_12"
    nodes = [{"name": "/a/conv/project_in/Conv", "type": "Conv", "seconds": 1.0},
             {"name": "/a/conv/core/Conv", "type": "Conv", "seconds": 2.0},
             {"name": "/b/Relu", "type": "Relu", "seconds": 0.5}]
    summary = summarise(nodes)
    assert summary["by_type"]["Conv"] == {"seconds": 3.0, "nodes": 2}
    assert list(summary["top_layers"]) == ["a.conv", "b"] and summary["total_seconds"] == 3.5


def test_agreement_and_dice():
    ref = np.array([0, 1, 1, 2])
    assert agreement(ref, ref) == 1.0 and agreement(ref, np.array([0, 1, 2, 2])) == 0.75
    assert dice_summary(ref, ref) == (1.0, 1.0) and dice_summary(np.zeros(4), np.zeros(4)) == (None, None)
    assert class_dice(ref, np.array([0, 1, 2, 2])) == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}


def test_reference_labels_follow_the_patch_and_the_models_label_ids():
    from tuckertrt.backends.torch_runner import TorchBackend
    from tuckertrt.data import example_reference
    from tuckertrt.models import load_model
    from tuckertrt.parity.compare import reference_patch

    model = load_model("fixture-3mm")  # 62 outputs numbered 1..61, named as TS's classes
    truth = reference_patch(model.spec, example_reference())
    patch, _ = default_patch(model.spec)
    labels = argmax_labels(TorchBackend(model.network, patch.shape, "fp32", "cpu").run(patch))
    assert truth.shape == tuple(model.spec.patch_size) and int(truth.max()) <= 61
    assert dice_summary(truth[None], labels)[0] > 0.9  # the fixture was trained on these labels


def test_parity_gate_is_the_builds():
    gate = ParityGate()
    assert (gate.min_dice, gate.min_class_dice) == (0.90, 0.50)
    assert gate.passes(0.95, 0.6) and not gate.passes(0.95, 0.4) and not gate.passes(0.89, 0.9)
    assert gate.passes(None, None)  # no foreground in the reference: nothing to lose
    with pytest.raises(UsageError, match="must be in"):
        ParityGate(1.5)


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory):
    model = small_loaded_model()
    patch, label = default_patch(model.spec)
    options = BenchOptions(["onnxruntime", "openvino", "tensorrt"],
                           {"onnxruntime": ["fp32"], "openvino": ["fp32", "bf16"], "tensorrt": ["fp16"]},
                           rounds=2, threads=1, profile=True)
    out = tmp_path_factory.mktemp("bench")
    return run_bench(df_variants(model, [1.0, 0.5]), options, out, patch, label, log=lambda s: None), out


def test_run_bench_times_gates_and_profiles_every_config(bench_result):
    result, out = bench_result
    rows = result["configs"]
    assert {(r["backend"], r["precision"], r["variant"]) for r in rows} == {
        (b, p, v) for b, p in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
        for v in ("DF 1", "DF 0.5")} or "BF16" not in __import__("openvino").Core().get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES")
    reference = next(r for r in rows if r["variant"] == "DF 1" and r["backend"] == "onnxruntime")
    assert reference["agreement"] > 0.999 and reference["passes_gate"]
    for r in rows:
        assert r["timing"]["median"] > 0 and r["peak_rss_mb"] > 0 and r["profile"]["by_type"]
        base = next(b for b in rows if b["variant"] == "DF 1" and (b["backend"], b["requested_precision"])
                    == (r["backend"], r["requested_precision"]))
        assert r["speedup"] == pytest.approx(base["timing"]["median"] / r["timing"]["median"], abs=1e-3)
    assert "tensorrt" in result["skipped"] or any(r["backend"] == "tensorrt" for r in rows)
    assert (out / "models" / "DF_0.5" / "model.onnx").is_file()
    assert result["variants"][1]["gmacs"] < result["variants"][0]["gmacs"]
    head = result["headline"]
    assert head["best_uncompressed"]["variant"] == "DF 1"
    assert 50 < head["best_uncompressed"]["isolated_peak_rss_mb"] < 3000
    passing_compressed = [r for r in rows if r["compressed"] and r["passes_gate"]]
    assert (head["speedup"] is None) == (not passing_compressed)
    json.dumps(result)


def test_reports_are_ratio_tables(bench_result):
    result, _ = bench_result
    text = markdown(result)
    assert "| variant | GMACs | onnxruntime fp32 | openvino fp32 |" in text and "| DF 0.5 |" in text
    assert "1.00× (" in text and "Uncompressed medians" in text
    assert "| Convolution |" in profile_markdown(result) and "| Conv |" in profile_markdown(result)


def test_ort_profile_returns_kernel_times_of_one_run(tmp_path):
    from tuckertrt.parity.export import export_model

    model = small_loaded_model()
    onnx_file = export_model(model, tmp_path / "m", fp16=False, verify=False).artifacts["fp32"]
    patch = np.zeros((1, 1, *model.spec.patch_size), dtype=np.float32)
    nodes = ort_profile(onnx_file, patch, threads=1)
    convs = [n for n in nodes if n["type"] == "Conv"]
    assert len(convs) == 11 and all(n["seconds"] >= 0 for n in nodes)  # one run, not two


def test_precision_selection():
    assert precisions_per_backend(["onnxruntime", "openvino"], ()) == \
        {"onnxruntime": ["fp32"], "openvino": ["fp32", "bf16"]}
    assert precisions_per_backend(["onnxruntime", "openvino"], ("bf16", "onnxruntime:int8")) == \
        {"onnxruntime": ["int8"], "openvino": ["bf16"]}
    with pytest.raises(UsageError, match="no benchmarked backend runs bf16"):
        precisions_per_backend(["onnxruntime"], ("bf16",))
    with pytest.raises(UsageError, match="add --backend openvino"):
        precisions_per_backend(["onnxruntime"], ("openvino:fp32",))
    assert precisions_per_backend(["onnxruntime", "openvino", "tensorrt"], ("fp32+exported", "bf16+graph-head")) == \
        {"onnxruntime": ["fp32+exported"], "openvino": ["fp32+exported", "bf16+graph-head"], "tensorrt": []}
    with pytest.raises(UsageError, match="no benchmarked backend runs bf16[+]logits"):
        precisions_per_backend(["openvino"], ("bf16+logits",))
    assert precisions_per_backend(["auto", "openvino"], ("fp32",)) == {"auto": ["auto"], "openvino": ["fp32"]}
    assert precisions_per_backend(["auto"], ()) == {"auto": ["auto"]}
    with pytest.raises(UsageError, match="auto chooses its own precision"):
        precisions_per_backend(["auto", "openvino"], ("auto:fp32",))


def test_bench_auto_is_what_segment_runs_beside_the_named_runtimes(tmp_path, capsys):
    from tuckertrt.bench.auto_backend import open_auto
    from tuckertrt import load_model

    model = small_loaded_model()
    model_file = save_decomposed(model, tmp_path / "small.pt")
    out, cache = tmp_path / "out", tmp_path / "cache"
    main(["bench", str(model_file), "--df", "0.5", "--backend", "auto", "--backend", "onnxruntime", "--rounds", "1",
          "--threads", "1", "--cache-dir", str(cache), "-o", str(out)])
    result = json.loads((out / "bench.json").read_text())
    auto = {r["variant"]: r for r in result["configs"] if r["backend"] == "auto"}
    assert sorted(auto) == ["DF 0.5", "DF 1"]
    for row in auto.values():
        runtime = row["describe"]["backend"]
        assert runtime in ("openvino", "onnxruntime") and row["precision"].startswith(runtime + " ")
        assert row["cache_entry"].startswith(str(cache)) and row["describe"]["threads"] == 1
        assert "timing" in row
    assert auto["DF 1"]["agreement"] > 0.99  # the chosen runtime reproduces the PyTorch model
    assert auto["DF 0.5"]["speedup"] > 0  # vs the uncompressed model as segment runs it by default
    # the entry bench timed is the one segment opens for this model: cached, nothing exported again
    again = open_auto(load_model(str(model_file)), cache)
    assert not again.exported and str(again.entry) == auto["DF 1"]["cache_entry"]
    assert again.choice.backend == auto["DF 1"]["describe"]["backend"]
    # the headline compares runtimes by name; auto is one of them, in its own column
    assert result["headline"]["best_uncompressed"]["backend"] == "onnxruntime"
    assert f"| auto {auto['DF 1']['precision']} |" in (out / "bench.md").read_text()


def test_bench_command_writes_json_and_markdown(tmp_path, capsys):
    model = small_loaded_model()
    model_file = save_decomposed(model, tmp_path / "small.pt")
    distilled = decompose(model, df=0.5)
    distilled.extra["recovery"] = {"mode": "distill", "iteration": 100}  # as `tuckertrt finetune` saves it
    distilled_file = save_decomposed(distilled, tmp_path / "distilled.pt")
    out = tmp_path / "out"
    main(["bench", str(model_file), "--df", "0.5", "--variant", str(distilled_file), "--backend", "openvino",
          "--precision", "fp32", "--rounds", "1", "--threads", "1", "--optimize", "latency", "--target",
          "openvino:fp32", "-o", str(out)])
    result = json.loads((out / "bench.json").read_text())
    assert [r["variant"] for r in result["configs"]] == ["DF 1", "DF 0.5", "DF 0.5 distilled", "DF 0.5 latency"]
    assert result["gate"] == {"min_dice": 0.9, "min_class_dice": 0.5} and result["reference_labels"]
    assert all(r["dice_labels"] is None for r in result["configs"])  # its classes are not TS classes
    plain, same = (next(r for r in result["configs"] if r["variant"] == k) for k in ("DF 0.5", "DF 0.5 distilled"))
    assert same["dice"] == plain["dice"] and same["worst_class_dice"] <= same["dice"]
    assert "| DF 0.5 |" in (out / "bench.md").read_text() and "| DF 0.5 latency |" in capsys.readouterr().out
    selection = json.loads((out / "selection_DF_0.5_latency.json").read_text())
    assert selection["method"] == "latency" and selection["layers"]
    whole = selection["whole_network_seconds"]  # the deployed networks timed whole: never slower than plain DF
    assert ("fallback" in selection) == (whole["selected"] > whole["plain"])
    manifest = json.loads((out / "models" / "DF_0.5_latency" / "manifest.json").read_text())
    assert manifest["reports"]["rank_selection"]["ranks"] == selection["ranks"]


@pytest.mark.parametrize("args,message", [
    (["ts-3mm", "--backend", "onnxruntime", "--precision", "bf16"], "no benchmarked backend runs bf16"),
    (["{small}", "--variant", "{small}"], "not a decomposed model"),
    (["{small}", "--variant", "{other}"], "not a compressed small"),
    (["{small}", "--reference", "{small}"], "--reference labels a --ct"),
])
def test_bench_command_bad_input_is_one_line(tmp_path, capsys, args, message):
    small = save_decomposed(small_loaded_model(), tmp_path / "small.pt")
    other = save_decomposed(decompose(small_loaded_model(num_classes=3), df=0.5), tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *[a.format(small=small, other=other) for a in args], "-o", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
