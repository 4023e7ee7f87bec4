"""Measurement: memory (measured and predicted), parameter counts, FLOPs, step time."""
