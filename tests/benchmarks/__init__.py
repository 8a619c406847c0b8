"""Benchmarks against floors (run with `python tests/benchmarks/run.py`); not timed tests."""
