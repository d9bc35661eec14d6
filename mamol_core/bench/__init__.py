"""Benchmarks: grids of runs, result tables, the paper's datasets, routing plots, speed."""
