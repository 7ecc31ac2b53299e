"""Plotting functions: each takes computed results and returns a matplotlib Figure."""
