"""The whole job: decompose → (distil) → export → engines → choose a backend → validate → report; and the
cached ``--backend auto`` runtime (:mod:`tuckertrt.bench.auto_backend`)."""
from tuckertrt.pipeline.build import BuildOptions, BuildOutcome, run_build

__all__ = ["BuildOptions", "BuildOutcome", "run_build"]
