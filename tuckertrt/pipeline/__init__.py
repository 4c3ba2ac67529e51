"""The whole job: decompose → (distil) → export → engines → choose a backend → validate → report."""
from tuckertrt.pipeline.build import BuildOptions, BuildOutcome, run_build

__all__ = ["BuildOptions", "BuildOutcome", "run_build"]
