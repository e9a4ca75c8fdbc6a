"""Measuring built layers against ground truth: `vidlayer eval`."""
