"""Mapping rasters: alignment onto one grid, dense tile prediction, block-wise mapping, outputs."""
