"""Offline training: data loading, splitting, negative sampling and fine-tuning of ELMRec."""
