"""Benchmarks (`make bench`) and the chaos suite (`make chaos`): measurements, not tests.

Every figure is a ratio against a baseline measured in the same run, on the same server; absolute numbers
are printed for context but never asserted.
"""
