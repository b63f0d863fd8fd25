"""Benchmarks: ``python -m backend bench quality`` (built-in prior vs analytic ground truth) and
``speed`` (GPU timings, to come)."""
