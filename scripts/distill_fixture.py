"""Recovery experiments on the `fixture-3mm` model and the TotalSegmentator example CT, on the CPU.

Held out: the last quarter of the CT's slices (z), never sampled for training; the fixture itself was trained
on the whole CT, so "held out" means held out from distillation/fine-tuning, not unseen by the teacher.

    python scripts/distill_fixture.py distill --df 0.3 -o runs/distill_df0.3
    python scripts/distill_fixture.py labels --df 0.3 -o runs/labels_df0.3
    python scripts/distill_fixture.py prune-labels --match-df 0.3 -o runs/prune_labels_df0.3
    tuckertrt report runs/* -o runs/report
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuckertrt.decomposition import decompose  # noqa: E402
from tuckertrt.models import load_model  # noqa: E402
from tuckertrt.toolkit.pruning import amount_matching_tucker, prune  # noqa: E402
from tuckertrt.training import RecoveryOptions, TrainConfig, recover  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "totalsegmentator-examples"


def labelled_dataset(folder: Path) -> Path:
    """A TotalSegmentator-style dataset of the example CT with TS's own labels (multilabel, TS ids), as links in
    a fixed place (so that a resumed run names the same inputs)."""
    case = folder / "example"
    case.mkdir(parents=True, exist_ok=True)
    for name, source in (("ct.nii.gz", "example_ct.nii.gz"), ("seg.nii.gz", "example_seg_fast_force_split.nii.gz")):
        if not (case / name).exists():
            os.symlink(DATA / source, case / name)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=["distill", "labels", "prune-labels", "prune-distill"])
    p.add_argument("--df", type=float, default=0.3)
    p.add_argument("--match-df", type=float, default=None, help="pruning: match Tucker's CR at this DF")
    p.add_argument("--iterations", type=int, default=80)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32])
    p.add_argument("--init", choices=["data", "none"], default="data")
    p.add_argument("--pseudo-labels", type=float, default=0.0, help="weight of Dice + CE on the teacher's labels")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    p.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy 2-core machine")
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    original = load_model("fixture-3mm")
    after_step = None
    if args.experiment.startswith("prune"):
        student, masks = prune(original, amount_matching_tucker(original, args.match_df or args.df))
        after_step = masks.apply
    else:
        student = decompose(original, df=args.df)
    options = RecoveryOptions(TrainConfig(iterations=args.iterations, batch_size=args.batch, lr=args.lr,
                                          checkpoint_every=args.checkpoint_every),
                              patch=tuple(args.patch), init=args.init,
                              pseudo_label_weight=args.pseudo_labels)
    kwargs = ({"cts": [DATA / "example_ct.nii.gz"], "distill": True} if args.experiment.endswith("distill")
              else {"dataset": labelled_dataset(Path(tempfile.gettempdir()) / "tuckertrt-fixture-data"),
                    "distill": False})
    _, report = recover(original, student, args.out, options=options, after_step=after_step, resume=args.resume,
                        **kwargs)
    keys = ("mode", "method", "df", "pruning_amount", "compression_ratio", "held_out", "original", "zero_shot",
            "recovered", "best_iteration", "iterations", "seconds", "seconds_per_iteration")
    print(json.dumps({k: report.get(k) for k in keys}, indent=1))


if __name__ == "__main__":
    main()
