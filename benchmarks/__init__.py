"""Side-by-side benchmarks (``python -m benchmarks``); the harness is benchmarks/harness.py."""
