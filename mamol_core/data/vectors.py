"""Vector files: which layers of a file of several (a project GeoPackage) hold features, and reading
one layer's features with a one-line error for what is no vector data (a CSV table of coordinates)."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from mamol_core.errors import MamolError

log = logging.getLogger(__name__)

#: File endings of delimited text, whose coordinate columns ``ogr2ogr -oo X_POSSIBLE_NAMES=…`` reads.
DELIMITED = (".csv", ".tsv")
#: Column names of coordinates in a table, as (x, y) pairs, lower case; the first four pairs are in degrees.
COORDINATE_COLUMNS = [("lon", "lat"), ("longitude", "latitude"), ("long", "lat"), ("lng", "lat"), ("x", "y"),
                      ("easting", "northing"), ("east", "north")]


def listed_layers(path: Path) -> list[tuple[str, str | None]] | None:
    """``(name, geometry type)`` of every layer GDAL lists in ``path`` (``None`` as the type of a table
    without geometry), or ``None`` where it cannot read the file as vector data."""
    import pyogrio

    try:
        return [(str(name), None if kind is None else str(kind)) for name, kind in pyogrio.list_layers(path)]
    except Exception:  # pyogrio raises several types for files it cannot read as vectors
        return None


def feature_layers(path: Path) -> list[tuple[str, str]] | None:
    """``(name, geometry type)`` of each layer of ``path`` that holds features (tables without geometry,
    such as a legend, hold none), for a file of several layers; ``None`` for a file of one layer, or one
    that cannot be listed (reading it then says why)."""
    listed = listed_layers(path)
    if listed is None or len(listed) < 2:
        return None
    return [(name, kind) for name, kind in listed if kind is not None]


def holds_features(path: Path) -> bool:
    """Whether GDAL reads ``path`` as a file with a layer of features (tables without geometry, such as
    a raster GeoPackage's legend, do not count)."""
    return any(kind is not None for _, kind in listed_layers(path) or [])


def read_features(path: Path, layer: str | None, unreadable: str = "; pass a GeoPackage, shapefile or GeoJSON"):
    """The features of ``layer`` of a vector file (a GeoDataFrame), without those that have no geometry
    (null or empty; counted in a warning, as are invalid geometries, which are kept). A file that cannot be read
    (``unreadable`` ends the message), or a table without geometry (a CSV of coordinates), is refused in one
    line with how to make it a layer of points or polygons."""
    import geopandas

    try:
        frame = geopandas.read_file(path, layer=layer)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        if Path(path).is_dir():
            raise MamolError(f"{path}: a folder that holds no vector layer GDAL reads; pass the file itself (points or "
                             "polygons in a GeoPackage, shapefile or GeoJSON)") from None
        reason = str(exc).splitlines()[0].split("; It might help")[0]  # GDAL's hint to name a driver does not apply here
        raise MamolError(f"{path}: cannot be read as vector data ({reason}){unreadable}") from None
    if not isinstance(frame, geopandas.GeoDataFrame):
        raise MamolError(no_geometry(path, [str(c) for c in frame.columns]))
    without = frame.geometry.isna() | frame.geometry.is_empty
    missing = int(without.sum())
    if missing:
        log.warning("%s: %d of %d features %s no geometry (null or empty) and %s skipped", path, missing, len(frame),
                    *(("has", "was") if missing == 1 else ("have", "were")))
    frame = frame[~without]
    invalid = int((~frame.geometry.is_valid).sum())
    if invalid:
        log.warning("%s: %d of %d features %s invalid geometry (a ring that crosses itself, …) and %s rasterized as drawn; check "
                    "them (ogr2ogr -makevalid, or QGIS's Fix geometries)", path, invalid, len(frame),
                    *(("has", "is") if invalid == 1 else ("have", "are")))
    return frame


def no_geometry(path: Path, columns: list[str]) -> str:
    """Why a table of ``columns`` is no vector layer, and the ``ogr2ogr`` line that makes it one where it
    is delimited text with coordinate columns (assigned WGS 84 where they are named as degrees, else a CRS to fill in)."""
    lower = {c.lower(): c for c in columns}
    delimited = Path(path).suffix.lower() in DELIMITED  # GDAL's CSV driver reads coordinate columns; other tables' drivers do not
    for number, (x, y) in enumerate(COORDINATE_COLUMNS if delimited else []):
        if x in lower and y in lower:
            crs = "EPSG:4326" if number < 4 else "EPSG:XXXX"
            return (f"{path}: a table without geometry (columns {', '.join(columns)}); make its points a vector layer first "
                    f"(ogr2ogr -oo X_POSSIBLE_NAMES={lower[x]} -oo Y_POSSIBLE_NAMES={lower[y]} -a_srs {crs} "
                    f"{shlex.quote(Path(path).stem + '.gpkg')} {shlex.quote(str(path))}) and pass that file")
    return (f"{path}: a table without geometry (columns {', '.join(columns) or 'none'}); pass points or polygons "
            "(a GeoPackage, shapefile or GeoJSON; a table with coordinate columns becomes points with QGIS's Create points layer "
            "from table)")
