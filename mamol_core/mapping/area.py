"""Where to map: inside the polygons of a vector file (``--aoi``) and/or where a mask raster is
nonzero (``--mask``). The output grid is cut to the area's bounding box grown by one tile; tiles
that do not touch the area are not predicted, and pixels outside it are nodata. Inside, predictions
are those of a map of the whole raster: tiles lie on a lattice fixed in the CRS, so they are the
same tiles, which still see the sensors' pixels around the area."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio import features
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from mamol_core.data.rasters import Grid, box_of, gdal_reason, grid_of, open_raster
from mamol_core.data.vectors import feature_layers, read_features
from mamol_core.errors import MamolError
from mamol_core.mapping.align import effective_grid
from mamol_core.mapping.crs import assign_crs_command, bounds_in, check_on_earth, check_related, crs_name


def polygon_layer(path: Path) -> str | None:
    """The layer of a vector file to take the area from: its only one (``None``), else its one layer of
    polygons; a file of several layers with none or more than one layer of polygons is refused."""
    layers = feature_layers(path)
    if layers is None or len(layers) < 2:
        return layers[0][0] if layers else None
    try:
        kinds = {name: kind if kind != "Unknown" else first_geometry_type(path, name) for name, kind in layers}
    except Exception:  # unreadable: reading it says why
        return None
    polygons = [name for name, _ in layers if "Polygon" in kinds[name]]
    if len(polygons) == 1:
        return polygons[0]
    listed = ", ".join(f"{name} ({kind})" for name, kind in layers)
    raise MamolError(f"{path}: holds {len(layers)} layers ({listed}) and {'no' if not polygons else 'more than one'} layer of polygons; "
                     f"export the area to map alone (ogr2ogr {shlex.quote(Path(path).stem + '_area.gpkg')} {shlex.quote(str(path))} LAYER)")


def first_geometry_type(path: Path, layer: str) -> str:
    """The geometry type of a layer's first feature (for a layer that declares none), or ``Unknown``."""
    import pyogrio

    frame = pyogrio.read_dataframe(path, layer=layer, max_features=1)
    return str(frame.geom_type.iloc[0]) if len(frame) and frame.geometry.iloc[0] is not None else "Unknown"


def read_polygons(path: Path):
    """The polygons of a vector file (a GeoDataFrame with a CRS); one line for anything else."""
    frame = read_features(path, polygon_layer(path))
    if frame.crs is None:
        raise MamolError(f"{path}: has no CRS; set one so it can be placed on the rasters ({assign_crs_command(path, vector=True)})")
    if len(frame):
        left, bottom, right, top = frame.total_bounds
        check_on_earth(CRS.from_wkt(frame.crs.to_wkt()), [(left, bottom), (right, top)], path, vector=True)
    if frame.empty or not frame.geom_type.isin(["Polygon", "MultiPolygon"]).all():
        raise MamolError(f"{path}: --aoi needs polygons (it holds {', '.join(sorted(set(frame.geom_type))) or 'no geometry'}); "
                         "draw the area to map as polygons")
    return frame


def crop_grid(grid: Grid, bounds: tuple[float, float, float, float], source: str, margin: int = 0) -> Grid:
    """The part of ``grid`` (whole pixels, same alignment) that covers ``bounds`` (in the grid's CRS),
    grown by ``margin`` pixels."""
    t = grid.transform
    left, bottom, right, top = bounds
    if not all(map(math.isfinite, bounds)):
        raise MamolError(f"{source}: cannot be placed in the input rasters' CRS {crs_name(grid.crs)}; check its CRS")
    col0, col1 = math.floor((left - t.c) / t.a + 1e-6), math.ceil((right - t.c) / t.a - 1e-6)
    row0, row1 = math.floor((top - t.f) / t.e + 1e-6), math.ceil((bottom - t.f) / t.e - 1e-6)
    if min(col1, grid.width) <= max(col0, 0) or min(row1, grid.height) <= max(row0, 0):
        raise MamolError(f"{source}: does not overlap the input rasters; give an area inside them (check its CRS)")
    col0, row0 = max(col0 - margin, 0), max(row0 - margin, 0)
    col1, row1 = min(col1 + margin, grid.width), min(row1 + margin, grid.height)
    return Grid(grid.crs, t @ Affine.translation(col0, row0), col1 - col0, row1 - row0)


class MapArea:
    """The area to map from ``aoi`` (polygons) and/or ``mask`` (nonzero pixels); use :meth:`on` for a grid."""

    def __init__(self, aoi: Path | None = None, mask: Path | None = None) -> None:
        self.aoi, self.mask = aoi, mask
        self.polygons = read_polygons(aoi) if aoi is not None else None
        if mask is not None:
            with open_raster(mask) as src:
                if src.crs is None:
                    raise MamolError(f"{mask}: has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX {shlex.quote(str(mask))}) "
                                     "so it can be placed on the rasters")
                effective_grid(grid_of(src), None, mask)  # refused, as inputs are, where its extent cannot lie in its CRS
                self.mask_crs, self.mask_bounds = src.crs, box_of(src)

    def describe(self) -> str:
        return " and ".join(f"{what} {path}" for what, path in (("inside", self.aoi), ("where nonzero:", self.mask)) if path)

    def crop(self, grid: Grid, margin: int = 0) -> Grid:
        """``grid`` cut to the area's bounding box (the intersection of the polygons' and the mask's), as
        :func:`crop_grid` does with ``margin``."""
        if grid.crs is None:
            raise MamolError(f"{self.aoi or self.mask}: the input rasters have no CRS, so {'--aoi' if self.aoi else '--mask'} "
                             "cannot be placed on them; pass --assume-crs EPSG:XXXX (the CRS they are in)")
        boxes = []
        if self.polygons is not None:
            check_related(self.polygons.crs, grid.crs, self.aoi, "the sensor rasters", vector=True)
            boxes.append(tuple(self.polygons.to_crs(grid.crs).total_bounds))
        if self.mask is not None:
            boxes.append(bounds_in(self.mask_crs, grid.crs, self.mask_bounds, self.mask, "the sensor rasters"))
        left, bottom = max(b[0] for b in boxes), max(b[1] for b in boxes)
        right, top = min(b[2] for b in boxes), min(b[3] for b in boxes)
        return crop_grid(grid, (left, bottom, right, top), " and ".join(str(p) for p in (self.aoi, self.mask) if p), margin)

    def on(self, grid: Grid) -> "GridArea":
        return GridArea(self, grid)


class GridArea:
    """A :class:`MapArea` on one grid: which pixels of a window are to be mapped."""

    def __init__(self, area: MapArea, grid: Grid) -> None:
        self.grid = grid
        self.shapes = list(area.polygons.to_crs(grid.crs).geometry) if area.polygons is not None else None
        self.mask = None
        if area.mask is not None:
            self.path = area.mask
            self.source = open_raster(area.mask)
            self.mask = WarpedVRT(self.source, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                                  resampling=Resampling.nearest)

    def pixels(self, window: Window) -> np.ndarray:
        """``[h, w]`` bool: the window's pixels inside the area (parts past the grid are outside)."""
        height, width = int(window.height), int(window.width)
        inside = np.zeros((height, width), bool)
        rows = min(height, self.grid.height - int(window.row_off))
        cols = min(width, self.grid.width - int(window.col_off))
        if rows <= 0 or cols <= 0:
            return inside
        part = np.ones((rows, cols), bool)
        transform = self.grid.transform @ Affine.translation(int(window.col_off), int(window.row_off))
        if self.shapes is not None:
            part &= features.geometry_mask(self.shapes, (rows, cols), transform, invert=True, all_touched=False)
        if self.mask is not None:
            try:
                values = self.mask.read(1, window=Window(int(window.col_off), int(window.row_off), cols, rows), masked=True)
            except RasterioError as exc:
                raise MamolError(f"{self.path}: reading failed ({gdal_reason(exc)}); "
                                 "the file may be truncated, re-export it") from None
            part &= np.ma.filled(values != 0, False)
        inside[:rows, :cols] = part
        return inside

    def close(self) -> None:
        if self.mask is not None:
            self.mask.close()
            self.source.close()
