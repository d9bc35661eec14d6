"""Vector files of several layers (a project GeoPackage): which of their layers hold features."""

from __future__ import annotations

from pathlib import Path


def feature_layers(path: Path) -> list[tuple[str, str]] | None:
    """``(name, geometry type)`` of each layer of ``path`` that holds features (tables without geometry,
    such as a legend, hold none), for a file of several layers; ``None`` for a file of one layer, or one
    that cannot be listed (reading it then says why)."""
    import pyogrio

    try:
        listed = pyogrio.list_layers(path)
    except Exception:  # pyogrio raises several types for unreadable files
        return None
    if len(listed) < 2:
        return None
    return [(str(name), str(kind)) for name, kind in listed if kind is not None]
