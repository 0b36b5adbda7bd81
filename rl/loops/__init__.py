"""Phases, evaluation, checkpoints and logging."""
