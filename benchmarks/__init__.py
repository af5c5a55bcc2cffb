"""Reproducible benchmarks: each measures our code beside a peer or the physical limit."""
