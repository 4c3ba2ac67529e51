"""Rank selection (rounding, energy, VBMF, latency-aware) and the exact folds of decomposed layers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import small_loaded_model
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.fold import apply_folds, fold_layer, fold_network
from tuckertrt.decomposition.layers import TuckerConv
from tuckertrt.decomposition.ranks import rank_for
from tuckertrt.bench.layer_timing import in_graph_openvino, openvino_timer, select_latency
from tuckertrt.decomposition.select import (Candidate, LatencyPlan, candidates, choose_latency, energy_rank,
                                            latency_plan, round_rank, selected_model, spectral_spec, vbmf_rank)
from tuckertrt.errors import TuckerTRTError, UsageError


def test_round_rank_and_energy_rank():
    assert round_rank(10, 32, 16) == 16 and round_rank(16, 32, 16) == 16 and round_rank(30, 20, 16) == 20
    values = np.array([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert energy_rank(values, 9 / 14) == 1 and energy_rank(values, 0.92) == 2 and energy_rank(values, 0.93) == 3 and energy_rank(values, 1.0) == 3


def test_vbmf_recovers_the_rank_of_a_noisy_low_rank_matrix():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((64, 5)) @ rng.standard_normal((5, 300)) * 3
    noisy = signal + 0.5 * rng.standard_normal((64, 300))
    assert vbmf_rank(np.linalg.svd(noisy, compute_uv=False), 64, 300) == 5
    assert vbmf_rank(np.linalg.svd(rng.standard_normal((64, 300)), compute_uv=False), 64, 300) == 1  # noise only


@pytest.mark.parametrize("method", ["energy", "vbmf"])
def test_spectral_spec_is_accepted_by_decompose(method):
    model = small_loaded_model()
    spec = spectral_spec(model.network, method, energy=0.8, min_rank=4, multiple=8)
    assert spec and all(v == "keep" or (v[0] % 8 == 0 or v[0] == 1) for v in spec.values())
    decomposed = decompose(model, ranks=spec)
    assert set(decomposed.decomposition["ranks"]) == {k for k, v in spec.items() if v != "keep"}
    with pytest.raises(UsageError):
        spectral_spec(model.network, "svd")


@pytest.mark.parametrize("conv", [nn.Conv3d(12, 20, 3, padding=1), nn.Conv3d(12, 20, 3, stride=2, padding=1),
                                  nn.ConvTranspose3d(20, 12, 2, stride=2)])
@pytest.mark.parametrize("fold", ["in", "out"])
def test_folds_are_exact(conv, fold):
    torch.manual_seed(0)
    layer = TuckerConv.from_conv(conv, 5, 7)
    x = torch.randn(1, conv.in_channels, 6, 8, 10)
    with torch.no_grad():
        folded = fold_layer(layer, fold)
        torch.testing.assert_close(folded(x), layer(x), atol=1e-5, rtol=1e-5)
    assert len(folded) == 2 and not any(isinstance(m, TuckerConv) for m in folded.modules())


def test_fold_network_and_apply_folds():
    model = decompose(small_loaded_model(), df=0.5)
    name = next(iter(model.decomposition["ranks"]))
    folded = apply_folds(model, {name: "in"})
    assert folded.decomposition["folds"] == {name: "in"} and "folds" not in model.decomposition
    x = torch.randn(1, 1, *model.spec.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(folded.network(x), model.network(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(TuckerTRTError, match="not a decomposed layer"):
        fold_network(model.network, {"encoder": "in"})
    with pytest.raises(TuckerTRTError, match="unknown fold"):
        fold_layer(dict(model.network.named_modules())[name], "both")
    with pytest.raises(TuckerTRTError, match="not decomposed"):
        apply_folds(small_loaded_model(), {})


def test_candidates_cover_keep_plain_rounded_and_folds():
    labels = [c.label for c in candidates(nn.Conv3d(32, 64, 3), (10, 20), 16)]
    assert labels == ["keep", "tucker 10x20", "tucker 10x20 fold-in", "tucker 10x20 fold-out",
                      "tucker 16x32", "tucker 16x32 fold-in", "tucker 16x32 fold-out"]


def test_select_latency_keeps_what_is_faster_under_a_deterministic_cost():
    """With a cost model where the original conv wins at full resolution and loses elsewhere, the selection
    keeps full-resolution convs, decomposes the rest, and its spec/folds rebuild an equivalent network."""
    model = small_loaded_model()
    full = model.spec.patch_size

    def cost(module: nn.Module, shape: tuple[int, ...]) -> float:
        convs = [m for m in module.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
        macs = float(sum(m.weight.numel() for m in convs)) * np.prod(shape[2:]) * 1e-9
        return macs + len(convs) * (10.0 if tuple(shape[2:]) == tuple(full) else 0.0)

    plan = latency_plan(model, df=0.5, min_rank=4)
    modules = dict(model.network.named_modules())
    seconds = {name: {c.label: cost(c.module(modules[name]), opts.shape) for c in opts.allowed}
               for name, opts in plan.layers.items()}
    selection = choose_latency(plan, seconds)
    full_res = [n for n, info in selection["layers"].items() if info["shape"][2:] == list(full)]
    assert full_res and all(selection["ranks"][n] == "keep" for n in full_res)
    assert any(v != "keep" for v in selection["ranks"].values())
    rebuilt = selected_model(model, selection)
    assert rebuilt.decomposition["selection"]["method"] == "latency"
    assert set(rebuilt.decomposition.get("folds", {})) == set(selection["folds"])
    x = torch.randn(1, 1, *full)
    with torch.no_grad():
        assert rebuilt.network(x).shape == model.network(x).shape


def _equal_times(plan: LatencyPlan) -> tuple[LatencyPlan, dict[str, dict[str, float]]]:
    """``plan`` and one second for each of its candidates."""
    return plan, {name: {c.label: 1.0 for c in opts.allowed} for name, opts in plan.layers.items()}


def test_select_latency_param_budget_forbids_keeping():
    model = small_loaded_model()
    selection = choose_latency(*_equal_times(latency_plan(model, df=0.5, min_rank=4, max_param_ratio=0.9, folds=False)))
    assert all("keep" not in info["seconds"] for info in selection["layers"].values())
    assert all(v != "keep" for v in selection["ranks"].values())


def test_candidates_that_save_no_parameters_are_never_measured():
    """Rounded-up ranks at (or near) the channel counts, and folds that outgrow the original conv, only add passes:
    the selection does not offer them (the plain DF candidate always stays)."""
    model = small_loaded_model()
    selection = choose_latency(*_equal_times(latency_plan(model, df=0.9, min_rank=4, multiple=16)))
    convs = {n: m for n, m in model.network.named_modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))}
    for name, info in selection["layers"].items():
        original = sum(p.numel() for p in convs[name].parameters())
        conv = convs[name]
        plain = f"tucker {rank_for(conv.in_channels, 0.9, 4)}x{rank_for(conv.out_channels, 0.9, 4)}"
        for label in info["seconds"]:
            if label in ("keep", plain) or not label.startswith("tucker"):
                continue
            ranks, _, fold = label.removeprefix("tucker ").partition(" fold-")
            cand = Candidate(tuple(int(r) for r in ranks.split("x")), fold or None)
            assert sum(p.numel() for p in cand.module(convs[name]).parameters()) < original, (name, label)


def test_openvino_timer_times_a_real_layer():
    pytest.importorskip("openvino")
    timer = openvino_timer("fp32", threads=1, repeats=2)
    conv = nn.Conv3d(8, 8, 3, padding=1)
    seconds = timer([conv, TuckerConv.from_conv(conv, 4, 4)], (1, 8, 24, 24, 24))
    assert len(seconds) == 2 and all(np.isfinite(s) and s > 0 for s in seconds)


def test_in_graph_selection_on_openvino_times_every_candidate_in_the_network():
    pytest.importorskip("openvino")
    model = small_loaded_model()
    probe = tuple(2 * d for d in model.spec.downsampling)
    measure = in_graph_openvino((1, 1, *model.spec.patch_size), probe, "bf16", threads=1, repeats=1)
    selection = select_latency(model, measure, df=0.5, min_rank=4, folds=False)
    for name, info in selection["layers"].items():
        assert set(info["seconds"]) == set(info["explained_variance"]) and "keep" in info["seconds"]
        assert all(v > 0 for v in info["seconds"].values()), name
    rebuilt = selected_model(model, selection)
    x = torch.randn(1, 1, *model.spec.patch_size)
    with torch.no_grad():
        assert rebuilt.network(x).shape == (1, model.spec.num_classes, *model.spec.patch_size)


def test_ties_go_to_the_more_accurate_candidate():
    model = small_loaded_model()
    flat = choose_latency(*_equal_times(latency_plan(model, df=0.5, min_rank=4)))
    assert all(v == "keep" for n, v in flat["ranks"].items() if n in flat["layers"])  # all equal: keep is exact
