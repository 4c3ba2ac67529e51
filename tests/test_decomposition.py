"""Tucker-2 layers, rank rules, whole-network decomposition, save/load, Table 1 accounting."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tuckertrt.decomposition import TuckerConv, decompose, plan_ranks, rank_for
from tuckertrt.decomposition.accounting import summarize, totals
from tuckertrt.decomposition.serialize import load_decomposed, save_decomposed
from tuckertrt.decomposition.tucker import explained_variance, partial_tucker, reconstruct
from tuckertrt.errors import TuckerTRTError, UsageError
from tuckertrt.models import load_model


def _full_rank_error(conv: nn.Module, x: torch.Tensor) -> float:
    layer = TuckerConv.from_conv(conv, conv.in_channels, conv.out_channels)
    with torch.no_grad():
        return float((layer(x) - conv(x)).abs().max())


def test_full_rank_conv3d_reproduces_output():
    torch.manual_seed(0)
    conv = nn.Conv3d(12, 20, 3, stride=2, padding=1)
    assert _full_rank_error(conv, torch.randn(2, 12, 9, 10, 11)) < 1e-4


def test_full_rank_conv_transpose3d_reproduces_output():
    torch.manual_seed(0)
    conv = nn.ConvTranspose3d(24, 10, 2, stride=2)  # weight is (C_in, C_out, k…)
    layer = TuckerConv.from_conv(conv, 24, 10)
    assert layer.project_in.weight.shape == (24, 24, 1, 1, 1)
    assert isinstance(layer.core, nn.ConvTranspose3d) and layer.core.weight.shape == (24, 10, 2, 2, 2)
    assert layer.project_out.weight.shape == (10, 10, 1, 1, 1)
    assert _full_rank_error(conv, torch.randn(1, 24, 4, 5, 6)) < 1e-4


def test_low_rank_shapes_and_bias():
    conv = nn.Conv3d(32, 64, 3, padding=1)
    layer = TuckerConv.from_conv(conv, 8, 16)
    assert layer.ranks == (8, 16)
    assert layer.project_in.weight.shape == (8, 32, 1, 1, 1) and layer.project_in.bias is None
    assert layer.core.weight.shape == (16, 8, 3, 3, 3) and layer.core.bias is None
    assert torch.equal(layer.project_out.bias, conv.bias)
    assert layer.core.padding == conv.padding and layer.core.stride == conv.stride


def test_hooi_does_not_lose_variance():
    torch.manual_seed(1)
    w = torch.randn(40, 30, 3, 3, 3)
    ev = [explained_variance(w, reconstruct(partial_tucker(w, 1, 0, 8, 8, iters), 1, 0)) for iters in (0, 5)]
    assert 0 < ev[0] <= ev[1] + 1e-12 < 1


@pytest.mark.parametrize("df,channels,expected", [(0.3, 320, 96), (0.3, 32, 10), (0.1, 32, 8), (0.05, 1, 1),
                                                  (1.0, 118, 118), (0.5, 10, 8)])
def test_rank_rule(df, channels, expected):
    assert rank_for(channels, df, 8) == expected


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_df_outside_range_is_rejected(bad):
    with pytest.raises(UsageError):
        plan_ranks(nn.Conv3d(4, 4, 3), bad)


def test_min_rank_must_be_positive_int():
    with pytest.raises(UsageError):
        plan_ranks(nn.Conv3d(4, 4, 3), 0.5, min_rank=2.5)


@pytest.fixture(scope="module")
def small_model():
    from tests.helpers import small_loaded_model

    return small_loaded_model()


def _full_ranks(network: nn.Module) -> dict[str, tuple[int, int]]:
    from tuckertrt.decomposition.ranks import conv_layers

    return {name: (conv.in_channels, conv.out_channels) for name, conv in conv_layers(network).items()}


def test_full_rank_network_reproduces_output(small_model):
    full = decompose(small_model, ranks=_full_ranks(small_model.network), policy="paper")
    assert len(full.decomposition["ranks"]) > 5
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert float((full.network(x) - small_model.network(x)).abs().max()) < 1e-4


def test_each_module_decomposed_once_and_aliases_follow(small_model):
    d = decompose(small_model, df=0.5, policy="paper")
    block = d.network.encoder.stages[0][0].convs[0]
    assert isinstance(block.conv, TuckerConv) and block.all_modules[0] is block.conv
    names = [n for n, m in d.network.named_modules() if isinstance(m, TuckerConv)]
    assert len(names) == len(d.decomposition["ranks"]) and not any(".all_modules." in n for n in names)
    assert small_model.network.encoder.stages[0][0].convs[0].conv.__class__ is nn.Conv3d  # original untouched


def test_default_policy_keeps_layers_that_do_not_pay(small_model):
    d = decompose(small_model, df=0.9)
    assert d.decomposition["skipped"], "the segmentation head at DF 0.9 does not pay"
    assert all(reason for reason in d.decomposition["skipped"].values())


def test_explicit_ranks(small_model):
    name = next(iter(decompose(small_model, df=0.5).decomposition["ranks"]))
    d = decompose(small_model, ranks={name: [2, 3]})
    assert d.decomposition["ranks"] == {name: [2, 3]}
    with pytest.raises(TuckerTRTError, match="unknown layers"):
        decompose(small_model, ranks={"nope": [1, 1]})
    with pytest.raises(TuckerTRTError, match="outside"):
        decompose(small_model, ranks={name: [1000, 1]})


def test_save_load_round_trip(small_model, tmp_path):
    d = decompose(small_model, df=0.5)
    path = save_decomposed(d, tmp_path / "m.pt")
    back = load_decomposed(path)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.network(x), d.network(x))
    assert back.decomposition["ranks"] == d.decomposition["ranks"]
    assert list(tmp_path.iterdir()) == [path]


def test_a_saved_model_loads_as_a_model_argument_and_plain_loading_points_there(small_model, tmp_path):
    import tuckertrt
    from tuckertrt.models import load_model as load_plain_model

    d = decompose(small_model, df=0.5)
    path = save_decomposed(d, tmp_path / "m.pt")
    x = torch.randn(1, 1, 32, 32, 32)
    for ref in (path, str(path)):
        back = tuckertrt.load_model(ref)
        assert back.decomposition["ranks"] == d.decomposition["ranks"]
        with torch.no_grad():
            assert torch.equal(back.network(x), d.network(x))
    with pytest.raises(TuckerTRTError, match="saved tuckertrt model: load it with tuckertrt.load_model"):
        load_plain_model(path)


def test_decomposing_twice_is_refused(small_model):
    with pytest.raises(TuckerTRTError, match="already decomposed"):
        decompose(decompose(small_model, df=0.5), df=0.3)


# Exact values from the authors' fvcore counting (../shared/README.md): params (M), GMACs.
TABLE1 = {
    "ts-3mm": {1: (16.550518, 369.144), 0.9: (14.875960, 359.968), 0.7: (9.257833, 230.900),
               0.5: (4.921577, 124.956), 0.4: (3.309639, 87.693), 0.3: (1.981569, 56.291),
               0.2: (1.001213, 33.163), 0.1: (0.345401, 21.620), 0.05: (0.151435, 19.544)},
    "ts-1.5mm": {1: (31.194809, 480.561), 0.9: (27.924612, 444.000), 0.7: (17.358069, 281.484),
                 0.5: (9.244671, 149.160), 0.4: (6.183190, 103.093), 0.3: (3.698556, 65.016),
                 0.2: (1.854488, 37.815), 0.1: (0.627772, 25.720), 0.05: (0.257926, 24.005)},
}


def _structure_only(model, df, policy):
    """Decomposed structure without the SVDs (accounting needs shapes only)."""
    import copy

    from tuckertrt.decomposition import decompose_network

    net = copy.deepcopy(model.network)
    decompose_network(net, plan_ranks(net, df, 8, policy)[0], init=False)
    return net


@pytest.mark.parametrize("preset", ["ts-3mm", "ts-1.5mm"])
def test_table1_reproduced(preset):
    model = load_model(preset)
    for df, (params_m, gmacs) in TABLE1[preset].items():
        for policy, tol in (("paper", 0.005), ("default", 0.05)):
            params, macs = totals(_structure_only(model, df, policy), model.spec.patch_size)
            assert abs(params / 1e6 / params_m - 1) < tol, (preset, df, policy)
            if policy == "paper":
                assert abs(macs / 1e9 / gmacs - 1) < tol, (preset, df)
            else:  # keeping the layers that do not pay can only save MACs
                assert macs / 1e9 <= gmacs * 1.005


@pytest.mark.parametrize("policy", ["paper", "default"])
def test_df_1_is_the_original_model_in_every_policy(policy):
    """Table 1's DF 1 row is the uncompressed network, and so is the model ``decompose``/``build --df 1`` ships."""
    model = load_model("ts-3mm")
    original = totals(model.network, model.spec.patch_size)
    assert abs(original[0] / 1e6 / TABLE1["ts-3mm"][1][0] - 1) < 0.005
    shipped = decompose(model, df=1, policy=policy)
    assert not shipped.decomposition["ranks"] and len(shipped.decomposition["skipped"]) > 20
    assert totals(shipped.network, model.spec.patch_size) == original
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(shipped.network(x), model.network(x))


def test_summarize_reports_layers(small_model):
    d = decompose(small_model, df=0.5)
    report = summarize(small_model, d, with_variance=True)
    assert report["params"] < report["params_original"]
    decomposed_rows = [r for r in report["layers"] if r["ranks"]]
    assert decomposed_rows and all(0 < r["explained_variance"] <= 1 for r in decomposed_rows)
    assert {"params", "params_original", "gmacs", "gmacs_original", "compression_ratio", "df", "min_rank",
            "patch", "layers"} <= set(report)


def test_residual_encoder_unet_from_old_plans_decomposes_exactly():
    """ResidualEncoderUNet (nnU-Net ResEnc presets) is built from the plans and decomposed like PlainConvUNet."""
    import copy

    from tests.helpers import small_plans
    from tuckertrt.decomposition import decompose_network
    from tuckertrt.models.plans import architecture, configuration

    plans = small_plans()
    cfg = plans["configurations"]["3d_fullres"]
    cfg["UNet_class_name"], cfg["n_conv_per_stage_encoder"] = "ResidualEncoderUNet", [1, 2, 2]
    network = architecture(configuration(plans)).build(1, 4).eval()
    full = copy.deepcopy(network)
    chosen, skipped = plan_ranks(full, None, 8, "paper", _full_ranks(full))
    decompose_network(full, chosen)
    assert not skipped and any("skip" in name for name in chosen)  # the residual 1×1 projections too
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert float((full(x) - network(x)).abs().max()) < 1e-4


def test_rank_spec_from_file_energy_and_vbmf(small_model, tmp_path):
    import json

    from tuckertrt.decomposition.ranks import rank_spec

    name = next(iter(decompose(small_model, df=0.5).decomposition["ranks"]))
    (tmp_path / "r.json").write_text(json.dumps({"ranks": {name: [2, 3]}}))
    assert rank_spec(str(tmp_path / "r.json"), small_model.network) == {name: [2, 3]}
    loose, tight = (rank_spec(f"energy:{e}", small_model.network, min_rank=1) for e in (0.5, 0.99))
    assert all(v == "keep" or w == "keep" or (v[0] <= w[0] and v[1] <= w[1])
               for v, w in zip(loose.values(), tight.values()))
    assert decompose(small_model, ranks=rank_spec("vbmf", small_model.network)).decomposition["policy"]
    with pytest.raises(UsageError):
        rank_spec("energy:x", small_model.network)
