"""Throughput, latency and model-quality benchmarks (see RESULTS.md)."""
