"""Benchmarks that print numbers: the synthesizer, the cache, a training step, learning curves."""
