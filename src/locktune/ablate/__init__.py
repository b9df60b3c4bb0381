"""Grids of training runs that reproduce the paper's ablations, and their reports."""
