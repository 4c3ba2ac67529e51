"""Small models for fast tests (importable as ``tests.helpers``)."""
from __future__ import annotations

import numpy as np
import torch

from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.plans import architecture, configuration, model_spec
from tuckertrt.models.presets import dataset_json, old_format_plans


def small_plans(n_stages: int = 3, patch: int = 32, base: int = 8, max_features: int = 32) -> dict:
    return old_format_plans("Dataset999_Small", n_stages, [patch] * 3, 3.0, max_features=max_features,
                            base_features=base)


def small_loaded_model(num_classes: int = 5, seed: int = 0) -> LoadedModel:
    """A 3-stage PlainConvUNet (8/16/32 features, patch 32³) with seeded random weights."""
    plans = small_plans()
    dataset = dataset_json({i: ("background" if i == 0 else f"class_{i}") for i in range(num_classes)})
    spec = model_spec("small", plans, dataset)
    arch = architecture(configuration(plans))
    torch.manual_seed(seed)
    network = arch.build(spec.input_channels, spec.num_classes).eval()
    return LoadedModel(spec=spec, network=network, architecture=arch, plans=plans, dataset=dataset,
                       source="test:small", trained=False)


def random_patch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A seeded standard-normal input patch."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def run_main(args: list, capsys) -> tuple[int, str, str]:
    """``tuckertrt ARGS`` in-process: (exit code, stdout, stderr)."""
    from tuckertrt.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
