"""Baselines in ELMRec's harness, layered: harness < fitting < methods < runner (`run_baselines`)."""
