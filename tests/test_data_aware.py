"""Data-aware Tucker factors, rank sensitivity and quality-aware rank allocation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import small_loaded_model
from tuckertrt.data import example_ct
from tuckertrt.decomposition import decompose
from tuckertrt.decomposition.accounting import forward_costs, totals
from tuckertrt.decomposition.allocate import Option, allocate, candidate_ranks, conv_macs, tucker_macs
from tuckertrt.decomposition.data_aware import fit_network, rank_errors
from tuckertrt.decomposition.layers import TuckerConv
from tuckertrt.decomposition.ranks import conv_layers
from tuckertrt.decomposition import load_model
from tuckertrt.pipeline.auto_ranks import auto_ranks
from tuckertrt.training.calibration import calibration_images


@pytest.fixture(scope="module")
def fixture_and_crops():
    model = load_model("fixture-3mm")
    return model, calibration_images([example_ct()], model.spec, count=2)


def test_full_rank_fit_reproduces_every_layer():
    model = small_loaded_model()
    full = decompose(model, ranks={n: [c.in_channels, c.out_channels] for n, c in conv_layers(model.network).items()},
                     policy="paper")
    images = torch.randn(2, 1, 32, 32, 32)
    fits = fit_network(model.network, full.network, images)
    assert {f.name for f in fits} >= {n for n, m in full.network.named_modules() if isinstance(m, TuckerConv)
                                      and "seg_layers" not in n} - {"decoder.seg_layers.0", "decoder.seg_layers.1"}
    assert max(f.error_data for f in fits) < 1e-3
    with torch.no_grad():
        x = torch.randn(1, 1, 32, 32, 32)
        assert torch.allclose(model.network(x), full.network(x), atol=1e-2, rtol=1e-2)


def test_data_aware_factors_beat_hosvd_on_real_ct_activations(fixture_and_crops):
    """At equal ranks, every layer reproduces the original layer's outputs on real CT crops better than the
    weight-only factors, and the network's segmentation of a crop agrees more with the original's."""
    model, crops = fixture_and_crops
    hosvd = decompose(model, df=0.5)
    data = decompose(model, df=0.5, calibration=crops)
    fits = data.decomposition["layer_fits"]
    assert len(fits) == len(hosvd.decomposition["ranks"]) and data.decomposition["init"] == "data"
    assert all(f["error_data"] < f["error_hosvd"] for f in fits)
    assert sum(f["error_data"] for f in fits) < 0.6 * sum(f["error_hosvd"] for f in fits)
    probe = calibration_images([example_ct()], model.spec, count=1, seed=7)
    with torch.no_grad():
        reference = model.network(probe).argmax(1)
        agree = {name: float((m.network(probe).argmax(1) == reference).float().mean())
                 for name, m in (("hosvd", hosvd), ("data", data))}
    assert agree["data"] > agree["hosvd"] + 0.02, agree


def test_rank_errors_fall_with_rank_and_predict_the_fit():
    model = small_loaded_model()
    images = torch.randn(3, 1, 32, 32, 32)
    first = next(iter(conv_layers(model.network)))  # its input is the image itself in both networks
    name = "encoder.stages.1.0.convs.0.conv"
    conv = conv_layers(model.network)[name]
    assert (conv.in_channels, conv.out_channels) == (8, 16)
    pairs = [(2, 8), (4, 8), (8, 8), (8, 16)]
    errors = rank_errors(model.network, images, {name: pairs, first: [(1, 4)]})
    e = errors[name]
    assert e[(2, 8)] > e[(4, 8)] > e[(8, 8)] > e[(8, 16)]
    assert e[(8, 16)] < 1e-3  # full ranks explain everything
    alone = decompose(model, ranks={first: [1, 4]}, calibration=images)
    fitted = alone.decomposition["layer_fits"][0]["error_data"]
    assert abs(fitted - errors[first][(1, 4)]) < 0.05


def test_tucker_macs_match_the_forward_pass_count():
    model = small_loaded_model()
    layers = conv_layers(model.network)
    ranks = {n: [max(1, c.in_channels // 2), max(1, c.out_channels // 2)] for n, c in layers.items()}
    decomposed = decompose(model, ranks=ranks, policy="paper")
    original_costs = {c.name: c for c in forward_costs(model.network, (32, 32, 32))}
    new_costs = forward_costs(decomposed.network, (32, 32, 32))
    for name, conv in layers.items():
        if name not in original_costs:
            continue  # deep-supervision heads that inference does not run
        cost = original_costs[name]
        p_in, p_out = int(np.prod(cost.in_shape[2:])), int(np.prod(cost.out_shape[2:]))
        assert conv_macs(conv, p_in, p_out) == cost.macs
        counted = sum(c.macs for c in new_costs if c.name.startswith(name + "."))
        assert tucker_macs(conv, *ranks[name], p_in, p_out) == counted, name


def test_allocation_respects_the_budget_and_spends_it_where_errors_are_cheapest():
    options = {
        "sensitive": [Option(None, 100, 0.0), Option((8, 8), 50, 0.9), Option((4, 4), 25, 2.0)],
        "robust": [Option(None, 100, 0.0), Option((8, 8), 50, 0.01), Option((4, 4), 25, 0.05)],
    }
    assert allocate(options, 200).rank_spec() == {"sensitive": "keep", "robust": "keep"}
    a = allocate(options, 125)
    assert a.macs <= 125 and a.layers["sensitive"].ranks is None and a.layers["robust"].ranks == (4, 4)
    b = allocate(options, 75)
    assert b.macs <= 75 and b.layers["robust"].ranks == (4, 4) and b.layers["sensitive"].ranks == (8, 8)
    assert allocate(options, 10).macs == 50  # nothing fits: the cheapest allocation
    assert all(r in [(c, d) for c in (8, 16) for d in (8, 16)] or r[0] < 16 or r[1] < 16
               for r in candidate_ranks(torch.nn.Conv3d(16, 16, 3)))


def test_auto_ranks_meet_a_mac_budget_and_a_speed_target():
    model = small_loaded_model()
    images = torch.randn(2, 1, 32, 32, 32)
    _, total = totals(model.network, (32, 32, 32))
    auto = auto_ranks(model, images, macs=0.6)
    compressed = decompose(model, ranks=auto.allocation.rank_spec())
    assert totals(compressed.network, (32, 32, 32))[1] <= 0.6 * total
    assert auto.to_json()["ranks"] and auto.target == {"macs": 0.6}

    def mac_ratio(original, candidate) -> float:  # a deterministic stand-in for the latency ratio
        return total / totals(candidate.network, (32, 32, 32))[1]

    fast = auto_ranks(model, images, speedup=1.5, measure=mac_ratio)
    assert fast.met and fast.rounds[-1]["speedup"] >= 1.5 and fast.mac_fraction <= 1 / 1.5
    beyond = auto_ranks(model, images, speedup=5.0, measure=mac_ratio)  # more than the candidates allow
    assert not beyond.met and beyond.to_json()["met"] is False
    assert beyond.mac_fraction < fast.mac_fraction


def test_decompose_cli_chooses_and_saves_auto_ranks(tmp_path):
    """``decompose --ranks auto --macs F --calibrate CT``: ranks within the budget, data-aware factors, the choice
    saved with the model; --ranks auto without calibration CTs is a usage error that writes nothing."""
    import nibabel as nib

    from tests.test_cli_stats import assert_one_line_error, run_cli
    from tests.test_training import synthetic_case
    from tuckertrt.models.checkpoint import save_results_folder

    model = small_loaded_model()
    folder = save_results_folder(model, tmp_path / "D" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    ct, _, affine = synthetic_case()
    nib.save(nib.Nifti1Image(ct, affine), tmp_path / "scan.nii.gz")
    assert_one_line_error(run_cli("decompose", str(folder), "--ranks", "auto", "--macs", "0.6", "-o",
                                  str(tmp_path / "x.pt")), 2, "--calibrate")
    assert not (tmp_path / "x.pt").exists()
    result = run_cli("decompose", str(folder), "--ranks", "auto", "--macs", "0.6",
                     "--calibrate", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "auto.pt"))
    assert result.returncode == 0, result.stderr
    saved = load_model(str(tmp_path / "auto.pt"))
    info = saved.decomposition
    assert info["init"] == "data" and info["auto_ranks"]["target"] == {"macs": 0.6} and info["auto_ranks"]["met"]
    patch = tuple(model.spec.patch_size)
    assert totals(saved.network, patch)[1] <= 0.6 * totals(model.network, patch)[1]
    assert "auto ranks" in result.stdout
