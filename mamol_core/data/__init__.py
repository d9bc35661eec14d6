"""Data: scenes, rasters, labels, the missing-modality protocol, pixel sets and patch sampling."""
