"""Benchmarks: per-patch latency, memory and per-layer profiles of every backend, uncompressed vs compressed."""
from tuckertrt.bench.run import BenchOptions, run_bench
from tuckertrt.bench.variants import Variant, df_variants, export_variant

__all__ = ["BenchOptions", "Variant", "df_variants", "export_variant", "run_bench"]
