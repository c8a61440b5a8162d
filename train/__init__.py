"""Corpus -> validated, checkpointed training -> a model bundle."""
