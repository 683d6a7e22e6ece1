"""Benchmarks: each prints figures and compares against a baseline measured in the same run."""
