"""pycni's benchmarks against the Go reference plugins: `python -m bench` (bench/run.py)."""
