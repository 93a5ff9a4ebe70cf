"""Benchmark scripts of medsam3-rt (not installed). `benchmarks.bench` is `medsam3-rt bench` as a library."""
