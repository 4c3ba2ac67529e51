"""Toolkit: explained-variance grids and maps, the pruning baseline, statistics, report plots."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_training import _options, make_ts_dataset, tiny_model
from tuckertrt.cli import main
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.serialize import load_decomposed, save_decomposed
from tuckertrt.decomposition.tucker import explained_variance, partial_tucker, reconstruct
from tuckertrt.errors import TuckerTRTError
from tuckertrt.models.checkpoint import save_results_folder
from tuckertrt.toolkit.pruning import PruningMasks, channel_mask, matched_amount, prune
from tuckertrt.toolkit.statistics import compare_classes, holm
from tuckertrt.toolkit.variance import layer_variances, variance_grid
from tuckertrt.training import recover


@pytest.mark.parametrize("shape,in_axis,out_axis", [((20, 12, 3, 3, 3), 1, 0), ((12, 20, 2, 2, 2), 0, 1)])
def test_variance_grid_matches_reconstruction(shape, in_axis, out_axis):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    grid = variance_grid(w, in_axis, out_axis)
    assert grid.shape == (w.shape[out_axis], w.shape[in_axis])
    for r_in, r_out in [(1, 1), (5, 7), (3, 20), (12, 20), (12, 1)]:
        expected = explained_variance(w, reconstruct(partial_tucker(w, in_axis, out_axis, r_in, r_out), in_axis,
                                                     out_axis))
        assert grid[r_out - 1, r_in - 1] == pytest.approx(expected, abs=1e-10)
    assert np.all(np.diff(grid, axis=0) >= -1e-12) and np.all(np.diff(grid, axis=1) >= -1e-12)


def test_variance_maps_of_a_model_and_cli(tmp_path, capsys):
    model = tiny_model()
    layers = layer_variances(model, df=0.5, min_rank=2)
    assert "decoder.seg_layers.0" not in {layer.name for layer in layers}  # not run in the forward pass
    head = layers[-1]
    assert head.ranks == (2, 3) and head.at(*head.ranks) == pytest.approx(head.to_json(2)["by_df"]["0.5"])
    with pytest.raises(TuckerTRTError, match="already compressed"):
        layer_variances(decompose(model, df=0.5), 0.5)
    folder = save_results_folder(model, tmp_path / "D" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    main(["variance", str(folder), "--df", "0.5", "--min-rank", "2", "-o", str(tmp_path / "ev")])
    assert "explained variance at DF 0.5" in capsys.readouterr().out
    doc = json.loads((tmp_path / "ev" / "variance.json").read_text())
    assert len(doc["layers"]) == len(layers) == len(list((tmp_path / "ev" / "layers").glob("*.png")))
    assert (tmp_path / "ev" / "summary.png").stat().st_size > 10_000
    grids = np.load(tmp_path / "ev" / "variance.npz")
    assert np.allclose(grids[head.name], head.grid)


def test_channel_mask_zeroes_the_weakest_channels_and_keeps_one():
    w = torch.ones(4, 6, 3, 3, 3) * torch.arange(1, 7).reshape(1, 6, 1, 1, 1)
    mask = channel_mask(w, 1, 0.5)
    assert mask[:, :3].sum() == 0 and mask[:, 3:].min() == 1
    assert channel_mask(torch.ones(4, 1, 3, 3, 3), 1, 0.9).sum() == 4 * 27  # a single channel stays


def test_prune_counts_zeroed_parameters_and_matches_a_ratio(tmp_path):
    model = tiny_model()
    pruned, masks = prune(model, 0.5)
    info = pruned.extra["pruning"]
    assert info["compression_ratio"] > 1.5 and info["params"] < info["params_original"]
    assert model.network.encoder.stages[0][0].convs[0].conv.weight.abs().min() > 0  # the original untouched
    amount = matched_amount(model, 3.0)
    assert prune(model, amount)[0].extra["pruning"]["compression_ratio"] == pytest.approx(3.0, rel=0.15)
    loaded = load_decomposed(save_decomposed(pruned, tmp_path / "p.pt"))
    assert loaded.extra["pruning"]["amount"] == 0.5
    restored = PruningMasks.from_zeros(loaded)
    for name, mask in masks.masks.items():
        assert torch.equal(restored.masks[name], mask)
    with pytest.raises(TuckerTRTError, match="already pruned"):
        prune(loaded, 0.3)


def test_pruned_model_fine_tunes_with_its_masks_kept(tmp_path):
    model = tiny_model()
    pruned, masks = prune(model, 0.5)
    best, report = recover(model, pruned, tmp_path / "out", dataset=make_ts_dataset(tmp_path / "data"),
                           options=_options(2), after_step=masks.apply)
    modules = dict(best.network.named_modules())
    for name, mask in masks.masks.items():
        assert float(modules[name].weight.detach()[mask == 0].abs().sum()) == 0
    assert report["method"] == "pruning" and report["evaluations"][2]["stage"] == "fine-tuned"


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([float("nan")])[0])


def _cases(values: dict[str, list[float]]) -> dict[str, dict[str, dict[str, float]]]:
    n = len(next(iter(values.values())))
    return {f"c{i}": {"nsd": {k: v[i] for k, v in values.items()}, "dice": {k: v[i] for k, v in values.items()}}
            for i in range(n)}


def test_wilcoxon_flags_only_a_consistently_degraded_class():
    rng = np.random.default_rng(0)
    base = {"liver": list(0.9 + rng.normal(0, 0.01, 12)), "spleen": list(0.9 + rng.normal(0, 0.01, 12))}
    worse = {"liver": [v - 0.05 for v in base["liver"]],
             "spleen": [v + d for v, d in zip(base["spleen"], rng.normal(0, 0.01, 12))]}
    tests = {t.name: t for t in compare_classes(_cases(base), _cases(worse), "nsd")}
    assert tests["liver"].degraded and tests["liver"].p_holm < 0.01 and tests["liver"].n_cases == 12
    assert not tests["spleen"].degraded


def _record(method, stage, cr, scores, df=None, amount=None):
    return {"schema": "tuckertrt-eval/1", "model": "m", "method": method, "stage": stage, "df": df,
            "pruning_amount": amount, "params": int(1000 / cr), "params_original": 1000, "compression_ratio": cr,
            "reference": "labels", "mean_dice": float(np.mean([np.mean(v) for v in scores.values()])),
            "mean_nsd": None, "cases": _cases(scores)}


def test_report_writes_plots_tables_and_summary(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = {"liver": list(0.95 + rng.normal(0, 0.01, 8)), "vertebrae_L1": list(0.9 + rng.normal(0, 0.01, 8))}
    runs = [_record("original", "original", 1.0, base)]
    for df, cr, drop in [(0.5, 3.0, 0.01), (0.3, 7.0, 0.08)]:
        for stage, factor in [("zero-shot", 1.0), ("fine-tuned", 0.3)]:
            runs.append(_record("tucker", stage, cr, {k: [x - drop * factor for x in v] for k, v in base.items()},
                                df=df))
    runs.append(_record("pruning", "zero-shot", 3.0, {k: [x - 0.5 for x in v] for k, v in base.items()},
                        amount=0.6))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "report.json").write_text(json.dumps({"evaluations": runs[:3]}))
    (tmp_path / "more.json").write_text(json.dumps({"evaluations": runs[:1] + runs[3:]}))  # original twice
    bench = {"configs": [{"variant": v, "df": df, "backend": "onnxruntime", "precision": "fp32",
                          "timing": {"median": t, "minimum": t * 0.9, "maximum": t * 1.1, "rounds": [t]}}
                         for v, df, t in [("original", None, 0.4), ("df0.5", 0.5, 0.2), ("df0.3", 0.3, 0.1)]]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    main(["report", str(tmp_path / "runs"), str(tmp_path / "more.json"), str(tmp_path / "bench.json"),
          "--metric", "dice", "-o", str(tmp_path / "rep")])
    out = tmp_path / "rep"
    for name in ("dice_vs_compression.png", "dice_per_group.png", "latency_vs_df.png"):
        assert (out / name).stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 6  # the original kept once
    assert summary["runs"][0]["groups"].keys() == {"organs", "vertebrae"}
    table = (out / "report.md").read_text()
    assert "tucker DF 0.3 zero-shot (CR 7.0) vs labels" in table and "**" in table and "▼" in table
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "rep" / "report.md"), "-o", str(tmp_path / "rep2")])
    assert "not valid JSON" in capsys.readouterr().err


def test_prune_cli_zero_shot_and_errors(tmp_path, capsys):
    folder = save_results_folder(tiny_model(), tmp_path / "D" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    main(["prune", str(folder), "--match-df", "0.5", "--min-rank", "2", "-o", str(tmp_path / "p")])
    assert "non-zero parameters" in capsys.readouterr().out
    assert load_decomposed(tmp_path / "p" / "model.pt").extra["pruning"]["compression_ratio"] > 1
    with pytest.raises(SystemExit):
        main(["prune", str(folder), "--df", "0.5", "--amount", "0.3", "-o", str(tmp_path / "q")])
    assert "exactly one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", str(tmp_path / "p" / "model.pt"), "--df", "0.5", "-o", str(tmp_path / "q")])
    assert "already compressed" in capsys.readouterr().err


def test_tucker_full_rank_has_all_variance():
    conv = nn.Conv3d(6, 10, 3)
    assert variance_grid(conv.weight, 1, 0)[-1, -1] == pytest.approx(1.0)
