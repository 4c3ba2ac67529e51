"""Train the small `fixture-3mm` nnU-Net (PlainConvUNet) on the TotalSegmentator example CT, deterministically on CPU.

TotalSegmentator's weights cannot be downloaded here and random weights say nothing about segmentation parity,
so this script makes a small *trained* model of the same family (3x3x3 convs, 2 per stage, InstanceNorm,
LeakyReLU, stride-2 downsampling, ConvTranspose3d upsampling) on ``example_ct.nii.gz`` with TotalSegmentator's
own labels (``example_seg_fast_force_split.nii.gz``). It is trained and evaluated on the same CT: a fixture for
parity tests, not a model of general value.

Preprocessing is exactly the inference code's (``tuckertrt.inference.preprocess``); intensity properties are
computed from the training CT's foreground as nnU-Net's fingerprint does. The result is saved as an nnU-Net v2
results folder with old-format plans (like the real TS weights), which ``load_model("fixture-3mm")`` finds.

The defaults reproduce the committed fixture (8000 iterations of 4×64³ crops: about 4 minutes on one H100). On
a CPU every iteration costs seconds; pass e.g. ``--iterations 500 --batch 2 --crop 48 48 48`` for a rough model.

    python scripts/train_fixture.py --data ../shared/data/totalsegmentator-examples [--device cpu]

``--ts3mm`` trains the TotalSegmentator 3 mm network itself instead (5 stages, 32–320 features, patch
112×112×128, 118 outputs with TS's label ids, as Dataset297): a trained model of the real size, for speed
measured at equal segmentation quality (``scripts/gpu_recovery.sh``; 66 MB, not committed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuckertrt.inference.io import read_ct, read_nifti  # noqa: E402
from tuckertrt.inference.preprocess import normalize_ct, to_network_grid  # noqa: E402
from tuckertrt.inference.segment import as_runner, segment_volume  # noqa: E402
from tuckertrt.models.checkpoint import save_results_folder  # noqa: E402
from tuckertrt.models.loaded import LoadedModel  # noqa: E402
from tuckertrt.models.plans import architecture, configuration, model_spec  # noqa: E402
from tuckertrt.models.presets import dataset_json, old_format_plans, ts_total_classes  # noqa: E402
from tuckertrt.parity.metrics import compare_labels  # noqa: E402

DATASET = "Dataset900_TSFixture3mm"
TRAINER = "nnUNetTrainer"
RESULTS = ROOT / "tuckertrt" / "data" / "fixture_3mm" / DATASET / f"{TRAINER}__nnUNetPlans__3d_fullres"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "totalsegmentator-examples")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--iterations", type=int, default=8000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, nargs=3, default=[64, 64, 64], help="training crop (network axis order)")
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], help="inference patch in the plans")
    p.add_argument("--stages", type=int, default=4)
    p.add_argument("--base-features", type=int, default=16)
    p.add_argument("--max-features", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--foreground", type=float, default=0.5, help="fraction of crops centred on a class voxel")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (the shared dev box has 2 cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ts3mm", action="store_true",
                   help="the TS-3mm network and its 118 outputs (TS ids); sets stages, features, patch and crop")
    p.add_argument("--dataset", default=DATASET, help="results folder's dataset name (with --out's default)")
    p.add_argument("--fast", action="store_true",
                   help="bfloat16 autocast and cuDNN autotuning: faster on a GPU, not bit-reproducible")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="safety cap: stop early (the report then gives the iterations actually run)")
    args = p.parse_args()
    if args.ts3mm:
        args.stages, args.base_features, args.max_features = 5, 32, 320
        args.patch = args.crop = [112, 112, 128]
    if args.out == RESULTS and args.dataset != DATASET:
        args.out = RESULTS.parents[2] / args.dataset / RESULTS.name
    return args


def foreground_properties(ct: np.ndarray, seg: np.ndarray) -> dict[str, float]:
    """nnU-Net fingerprint statistics of the CT voxels inside the labels."""
    fg = ct[seg > 0].astype(np.float64)
    return {"mean": float(fg.mean()), "std": float(fg.std()), "median": float(np.median(fg)),
            "min": float(fg.min()), "max": float(fg.max()),
            "percentile_00_5": float(np.percentile(fg, 0.5)), "percentile_99_5": float(np.percentile(fg, 99.5))}


def build_model(args: argparse.Namespace, labels: dict[int, str], intensity: dict[str, float]) -> LoadedModel:
    plans = old_format_plans(args.dataset, args.stages, list(args.patch), 3.0, args.max_features, args.base_features)
    plans["foreground_intensity_properties_per_channel"] = {"0": intensity}
    dataset = {**dataset_json(labels), "numTraining": 1}
    spec = model_spec("fixture-3mm", plans, dataset)
    arch = architecture(configuration(plans))
    network = arch.build(spec.input_channels, spec.num_classes)
    return LoadedModel(spec=spec, network=network, architecture=arch, plans=plans, dataset=dataset,
                       source="scripts/train_fixture.py", trained=True)


class CropSampler:
    """Random crops of the padded volume; a share of them centred on a voxel of a randomly chosen class."""

    def __init__(self, image: np.ndarray, labels: np.ndarray, crop: list[int], foreground: float,
                 rng: np.random.Generator):
        self.crop = np.array(crop)
        half = self.crop // 2
        self.image = np.pad(image, [(h, h) for h in half])  # zero = the normalised mean, as nnU-Net pads
        self.labels = np.pad(labels, [(h, h) for h in half])
        self.shape = np.array(labels.shape)
        self.foreground = foreground
        self.rng = rng
        self.class_voxels = {c: np.argwhere(labels == c) for c in np.unique(labels) if c != 0}

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() < self.foreground:
            classes = sorted(self.class_voxels)
            voxels = self.class_voxels[classes[self.rng.integers(len(classes))]]
            centre = voxels[self.rng.integers(len(voxels))]
        else:
            centre = np.array([self.rng.integers(n) for n in self.shape])
        start = centre  # in padded coordinates the crop starting here is centred on `centre`
        window = tuple(slice(s, s + c) for s, c in zip(start, self.crop))
        return self.image[window], self.labels[window]


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's default: cross-entropy + soft Dice over the foreground classes, per sample."""
    ce = F.cross_entropy(logits, target)
    probs = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
    axes = tuple(range(2, logits.ndim))
    intersect = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    soft_dice = (2 * intersect + 1e-5) / (denom + 1e-5).clamp_min(1e-8)
    return ce - soft_dice.mean()


def train(model: LoadedModel, sampler: CropSampler, args: argparse.Namespace) -> float:
    net = model.network.to(args.device).train()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    start = time.perf_counter()
    for it in range(args.iterations):
        lr = args.lr * (1 - it / args.iterations) ** 0.9  # nnU-Net's poly schedule
        for group in opt.param_groups:
            group["lr"] = lr
        crops = [sampler.sample() for _ in range(args.batch)]
        x = torch.from_numpy(np.stack([c[0] for c in crops])[:, None]).to(args.device)
        y = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64)).to(args.device)
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.fast):
            logits = net(x)
        loss = dice_ce_loss(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        if it % 50 == 0 or it == args.iterations - 1:
            print(f"iter {it:4d}  loss {loss.item():.4f}  lr {lr:.2e}  {time.perf_counter() - start:.0f}s",
                  flush=True)
        if args.max_seconds and time.perf_counter() - start > args.max_seconds:
            print(f"stopped at the {args.max_seconds:g} s cap after {it + 1} iterations", flush=True)
            args.iterations = it + 1
            break
    net.cpu().eval()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.fast:
        torch.backends.cudnn.benchmark = True
    else:
        if args.device.startswith("cuda"):
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    ct = read_ct(args.data / "example_ct.nii.gz")
    seg = read_nifti(args.data / "example_seg_fast_force_split.nii.gz")
    ts_labels = seg.array.astype(np.int64)
    ts_names = ts_total_classes()
    # outputs: every TS class by its TS id (--ts3mm), or the classes present, relabelled 1..n
    present = sorted(ts_names) if args.ts3mm else [int(v) for v in np.unique(ts_labels) if v != 0]
    labels = {0: "background", **{i + 1: ts_names[t] for i, t in enumerate(present)}}
    consecutive = np.zeros(max(max(present), int(ts_labels.max())) + 1, dtype=np.uint8)
    consecutive[present] = np.arange(1, len(present) + 1)
    model = build_model(args, labels, foreground_properties(ct.array, ts_labels))
    image, _ = to_network_grid(ct.array, ct.affine, model.spec, order=1)
    target, _ = to_network_grid(consecutive[ts_labels], seg.affine, model.spec, order=0)
    sampler = CropSampler(normalize_ct(image, model.spec.intensity), target, args.crop, args.foreground,
                          np.random.default_rng(args.seed))
    n_params = sum(p.numel() for p in model.network.parameters())
    print(f"{len(present)} classes, network grid {image.shape}, {n_params} parameters", flush=True)
    seconds = train(model, sampler, args)
    save_results_folder(model, args.out, trainer=TRAINER)
    result = segment_volume(ct, as_runner(model, args.device))
    ts_prediction = np.asarray([0, *present])[result.labels]
    scores = compare_labels(ts_labels, ts_prediction, ct.spacing, ts_names)
    size = (args.out / "fold_0" / "checkpoint_final.pth").stat().st_size
    report = {"train_seconds": round(seconds, 1), "iterations": args.iterations, "parameters": n_params,
              "checkpoint_bytes": size, "mean_dice": round(scores.mean_dice, 4),
              "mean_nsd_2mm": round(scores.mean_nsd, 4),
              "groups": {g: round(v["dice"], 4) for g, v in scores.groups.items()},
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
