#!/usr/bin/env python
"""Whole-CT segmentation: nnU-Net's own predictor vs tuckertrt's uncompressed and DF exports, one process, one CT.

nnU-Net (``pip install .[bench]``: nnunetv2 2.5.2, beside the CPU torch) runs the model from an nnU-Net results
folder written for it (plans.json, dataset.json, fold_0/checkpoint_final.pth of the preset's network with seeded
random weights: timing does not depend on the weights) with ``predict_from_files_sequential``: reading,
preprocessing, Gaussian sliding window at the same tile step, no mirroring (TotalSegmentator's setting), export.
tuckertrt runs the same network exported uncompressed and at ``--df`` on each ``--runtime`` as ``tuckertrt
segment`` does (read, resample, sliding window, back to the input grid, write). All in interleaved rounds after a
warm-up, with ``--threads`` threads everywhere. Prints seconds per CT (best round), the ratios, and how many voxels
of nnU-Net's labels tuckertrt's uncompressed run reproduces.

    python benchmarks/whole_ct_vs_nnunet.py [--ct CT] [--model ts-3mm] [--df 0.3] [--rounds 2] [--threads 2]
        [--runtime openvino:bf16 onnxruntime:fp32] [--exports DIR]
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np

from tuckertrt.data import example_ct
from tuckertrt.decomposition import load_model
from tuckertrt.inference.segment import DEFAULT_TILE_STEP, Runner, segment_volume
from tuckertrt.models import LoadedModel
from tuckertrt.models.checkpoint import save_results_folder


def export(model: str, df: float | None, dest: Path) -> Path:
    if not (dest / "manifest.json").is_file():
        args = [sys.executable, "-m", "tuckertrt", "export", model, "-o", str(dest), "--no-fp16", "--no-verify"]
        subprocess.run(args + (["--df", str(df)] if df else []), check=True, capture_output=True)
    return dest


# The resampling settings TotalSegmentator's plans carry (nnU-Net's defaults); 2.5.x needs them in the plans.
RESAMPLING = {
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
}


def for_nnunet(model: LoadedModel) -> LoadedModel:
    """``model`` with plans nnU-Net 2.5's predictor reads (the resampling settings added where missing)."""
    plans = copy.deepcopy(model.plans)
    for cfg in plans["configurations"].values():
        for key, value in RESAMPLING.items():
            cfg.setdefault(key, value)
    return replace(model, plans=plans)


def nnunet_run(results: Path, ct: Path, out_dir: Path, tile_step: float, threads: int) -> Callable[[], Path]:
    """A callable that segments ``ct`` into ``out_dir`` with nnU-Net's predictor (loaded once, on the CPU)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(threads)
    predictor = nnUNetPredictor(tile_step_size=tile_step, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(results), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    out_dir.mkdir(parents=True, exist_ok=True)

    def run() -> Path:
        predictor.predict_from_files_sequential([[str(ct)]], [str(out_dir / "nnunet")], save_probabilities=False,
                                                overwrite=True)
        return out_dir / "nnunet.nii.gz"

    return run


def tuckertrt_run(model: str, backend: str, precision: str, artifacts: Path, ct: Path, out: Path,
                  tile_step: float, threads: int) -> Callable[[], Path]:
    from tuckertrt.backends import open_backend

    runner = Runner(load_model(model).spec, open_backend(backend, artifacts, precision, threads=threads, head="auto"))

    def run() -> Path:
        segment_volume(ct, runner, tile_step).save(out)
        return out

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=Path, default=example_ct())
    ap.add_argument("--model", default="ts-3mm")
    ap.add_argument("--df", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile-step", type=float, default=DEFAULT_TILE_STEP)
    ap.add_argument("--runtime", nargs="+", default=["openvino:bf16"], help="BACKEND:PRECISION for tuckertrt")
    ap.add_argument("--exports", type=Path, default=None)
    args = ap.parse_args()
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exports = args.exports or work / "exports"
        artifacts = {"uncompressed": export(args.model, None, exports / "uncompressed"),
                     f"DF {args.df}": export(args.model, args.df, exports / f"df{args.df}")}
        results = save_results_folder(for_nnunet(load_model(args.model)),
                                      work / "nnunet" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
        runs = {"nnU-Net predictor": nnunet_run(results, args.ct, work / "nnunet_out", args.tile_step, args.threads)}
        for runtime in args.runtime:
            backend, precision = runtime.split(":")
            for name, folder in artifacts.items():
                runs[f"tuckertrt {runtime} {name}"] = tuckertrt_run(
                    args.model, backend, precision, folder, args.ct, work / f"{backend}_{name[:3]}.nii.gz",
                    args.tile_step, args.threads)
        outputs = {name: run() for name, run in runs.items()}  # warm-up, and the labels to compare
        labels = {name: np.asanyarray(nib.load(path).dataobj) for name, path in outputs.items()}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    best = {name: min(s) for name, s in seconds.items()}
    shape = labels["nnU-Net predictor"].shape
    print(f"{args.model} on {args.ct.name} {shape}, tile step {args.tile_step}, {args.threads} threads, best of "
          f"{args.rounds} interleaved rounds (s per CT, read to written labels); nnunetv2 {version('nnunetv2')}")
    reference = best["nnU-Net predictor"]
    for name, s in best.items():
        agree = (labels[name] == labels["nnU-Net predictor"]).mean()
        print(f"  {name}: {s:.2f} s ({reference / s:.1f}x nnU-Net), labels equal to nnU-Net's on {agree:.2%}")
    for runtime in args.runtime:
        full, compressed = (best[f"tuckertrt {runtime} {name}"] for name in artifacts)
        print(f"  {runtime}: DF {args.df} vs uncompressed {full / compressed:.2f}x; "
              f"vs nnU-Net {reference / compressed:.1f}x")
    fastest_full = min(best[f"tuckertrt {r} uncompressed"] for r in args.runtime)
    fastest_df = min(best[f"tuckertrt {r} DF {args.df}"] for r in args.runtime)
    print(f"  fastest DF {args.df} vs fastest uncompressed: {fastest_full / fastest_df:.2f}x; "
          f"vs nnU-Net's predictor: {reference / fastest_df:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
