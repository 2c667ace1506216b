"""Benchmarks of ELMRec components."""
