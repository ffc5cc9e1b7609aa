"""Side-by-side benchmarks: `./dev bench [name ...]` runs `benchmarks/bench_<name>.py`."""
