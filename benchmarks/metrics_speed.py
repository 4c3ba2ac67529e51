"""How long scoring a whole segmentation takes: Dice and NSD (2 mm) of all 61 classes of TotalSegmentator's labels
of the example CT (122×101×112 at 3 mm) against the same labels shifted by one voxel.

    python benchmarks/metrics_speed.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import os

import nibabel as nib
import numpy as np

from tuckertrt.data import example_reference
from tuckertrt.inference.timing import interleaved
from tuckertrt.parity.metrics import compare_labels
from tuckertrt.bench.auto_backend import cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ref = np.asarray(nib.load(example_reference()).dataobj)
    pred = np.roll(ref, 1, axis=2)
    timing = interleaved({"compare_labels": lambda: compare_labels(ref, pred, (3.0, 3.0, 3.0))},
                         rounds=args.rounds)["compare_labels"]
    print(f"CPU {cpu_model()}, {os.cpu_count()} threads, numpy {np.__version__}")
    print(f"61 classes, {'x'.join(map(str, ref.shape))}: median {timing.median:.2f} s "
          f"(min {timing.minimum:.2f}, max {timing.maximum:.2f}) over {args.rounds} rounds")


if __name__ == "__main__":
    main()
