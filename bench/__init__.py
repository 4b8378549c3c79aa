"""The benchmark; run from the repository root: python -m bench.run (make bench)."""
