"""Measurement: per-patch latency, memory and per-layer profiles of every backend, uncompressed vs compressed,
and the cached ``--backend auto`` runtime chosen by measuring them (:mod:`tuckertrt.bench.auto_backend`)."""
from tuckertrt.bench.run import BenchOptions, run_bench
from tuckertrt.bench.variants import Variant, df_variants, export_variant

__all__ = ["BenchOptions", "Variant", "df_variants", "export_variant", "run_bench"]
