"""Architecture-only presets with the real TotalSegmentator network shapes and seeded random weights."""
from __future__ import annotations

import json
from importlib import resources

import torch

from tuckertrt.models.loaded import LoadedModel
from tuckertrt.models.plans import architecture, configuration, model_spec

# Plausible CT foreground statistics (HU); the real ones come from each model's plans.json.
_CT_INTENSITY = {"mean": 83.0, "std": 136.0, "percentile_00_5": -1004.0, "percentile_99_5": 1200.0,
                 "median": 56.0, "min": -1024.0, "max": 3071.0}

# Dataset291..295: which TS "total" ids each 1.5 mm part model predicts (TS ids are consecutive per part).
TS_PARTS = {
    "organs": (291, range(1, 25)),
    "vertebrae": (292, range(25, 51)),
    "cardiac": (293, range(51, 69)),
    "muscles": (294, range(69, 92)),
    "ribs": (295, range(92, 118)),
}


def ts_total_classes() -> dict[int, str]:
    text = resources.files("tuckertrt.data").joinpath("ts_total_classes.json").read_text()
    return {int(k): v for k, v in json.loads(text)["total"].items()}


def old_format_plans(name: str, n_stages: int, patch: list[int], spacing: float, max_features: int = 320,
                     base_features: int = 32) -> dict:
    """Plans in nnU-Net's old format, as the TotalSegmentator weights ship them."""
    kernels = [[3, 3, 3]] * n_stages
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    return {
        "dataset_name": name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [spacing] * 3,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": patch,
            "median_image_size_in_voxels": patch,
            "spacing": [spacing] * 3,
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "UNet_class_name": "PlainConvUNet",
            "UNet_base_num_features": base_features,
            "n_conv_per_stage_encoder": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1),
            "num_pool_per_axis": [n_stages - 1] * 3,
            "pool_op_kernel_sizes": strides,
            "conv_kernel_sizes": kernels,
            "unet_max_num_features": max_features,
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(_CT_INTENSITY)},
    }


def dataset_json(labels: dict[int, str]) -> dict:
    return {"channel_names": {"0": "CT"}, "labels": {v: k for k, v in sorted(labels.items())},
            "numTraining": 0, "file_ending": ".nii.gz"}


def _ts_3mm() -> tuple[dict, dict]:
    labels = {0: "background", **ts_total_classes()}
    return old_format_plans("Dataset297_TotalSegmentator_total_3mm_1559subj", 5, [112, 112, 128], 3.0), \
        dataset_json(labels)


def _ts_15mm(part: str = "organs") -> tuple[dict, dict]:
    dataset_id, ids = TS_PARTS[part]
    total = ts_total_classes()
    labels = {0: "background", **{i + 1: total[t] for i, t in enumerate(ids)}}
    return old_format_plans(f"Dataset{dataset_id}_TotalSegmentator_part_{part}", 6, [128, 128, 128], 1.5), \
        dataset_json(labels)


PRESETS = {"ts-3mm": _ts_3mm, "ts-1.5mm": _ts_15mm,
           **{f"ts-1.5mm-{part}": (lambda p=part: _ts_15mm(p)) for part in TS_PARTS}}


def load_preset(name: str, seed: int = 0) -> LoadedModel:
    plans, dataset = PRESETS[name]()
    spec = model_spec(name, plans, dataset)
    arch = architecture(configuration(plans))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = arch.build(spec.input_channels, spec.num_classes).eval()
    return LoadedModel(spec=spec, network=network, architecture=arch, plans=plans, dataset=dataset,
                       source=f"preset:{name}", trained=False)
