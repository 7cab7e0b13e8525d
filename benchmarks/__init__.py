"""Benchmarks of the platform (README.md), and the per-record mapping rules they and the tests compare with."""
