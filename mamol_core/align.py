"""Putting mapping inputs on one grid without loading them: each raster is read through a
rasterio ``WarpedVRT`` onto the output grid, window by window.

The output grid takes the CRS, pixel size and pixel alignment of a reference raster (by default
the input with the finest resolution; ``--reference`` chooses another) and covers the union of
all inputs' extents. Outside a raster's coverage, and where it holds nodata, its values read as
NaN, so that modality counts as missing there.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from mamol_core.errors import MamolError
from mamol_core.rasters import Grid, open_raster


@dataclass
class MapInput:
    """One modality raster given to the mapper."""

    name: str
    path: Path


def parse_crs(text: str | None) -> CRS | None:
    if text is None:
        return None
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise MamolError(f"--assume-crs {text!r}: not a CRS GDAL knows; use e.g. EPSG:32632") from None


def source_crs(dataset, path: Path, assumed: CRS | None) -> CRS:
    """The raster's CRS, or the one given by ``--assume-crs``; a clear error when there is neither."""
    if dataset.crs is not None:
        return dataset.crs
    if assumed is None:
        raise MamolError(f"{path}: has no CRS; pass --assume-crs EPSG:XXXX (the CRS it is in) or assign one with gdal_edit.py -a_srs")
    return assumed


def output_grid(datasets: list, paths: list[Path], assumed: CRS | None, reference: int | None) -> Grid:
    """The output grid: CRS, resolution and alignment of the reference raster, extent = union of inputs."""
    crs_list = [source_crs(d, p, assumed) for d, p in zip(datasets, paths)]
    common = crs_list[0]
    if reference is None:
        sizes = []
        for dataset, crs in zip(datasets, crs_list):
            left, bottom, right, top = transform_bounds(crs, common, *dataset.bounds)
            sizes.append(abs((right - left) / dataset.width * (top - bottom) / dataset.height))
        reference = int(np.argmin(sizes))
    ref, ref_crs = datasets[reference], crs_list[reference]
    ref_bounds = ref.bounds
    union = list(ref_bounds)
    for dataset, crs, path in zip(datasets, crs_list, paths):
        left, bottom, right, top = transform_bounds(crs, ref_crs, *dataset.bounds)
        if left >= ref_bounds.right or right <= ref_bounds.left or bottom >= ref_bounds.top or top <= ref_bounds.bottom:
            raise MamolError(f"{path}: does not overlap {paths[reference].name}; pass rasters of the same area (check their CRS)")
        union = [min(union[0], left), min(union[1], bottom), max(union[2], right), max(union[3], top)]
    t = ref.transform
    if t.b != 0 or t.d != 0:
        raise MamolError(f"{paths[reference]}: a rotated grid cannot be the reference; warp it north-up first (gdalwarp)")
    px, py = t.a, -t.e
    col0 = math.floor((union[0] - t.c) / px + 1e-6)
    col1 = math.ceil((union[2] - t.c) / px - 1e-6)
    row0 = math.floor((t.f - union[3]) / py + 1e-6)
    row1 = math.ceil((t.f - union[1]) / py - 1e-6)
    transform = Affine(px, 0, t.c + col0 * px, 0, -py, t.f - row0 * py)
    return Grid(ref_crs, transform, col1 - col0, row1 - row0)


class AlignedInputs(contextlib.ExitStack):
    """Open inputs and their ``WarpedVRT`` views on the output grid; use as a context manager."""

    def __init__(self, inputs: list[MapInput], assume_crs: str | None = None, reference: Path | None = None,
                 resampling: str = "bilinear") -> None:
        super().__init__()
        self.inputs = inputs
        self.datasets = [self.enter_context(open_raster(i.path)) for i in inputs]
        paths = [i.path for i in inputs]
        assumed = parse_crs(assume_crs)
        index = None
        if reference is not None:
            resolved = [Path(p).resolve() for p in paths]
            if Path(reference).resolve() not in resolved:
                raise MamolError(f"--reference {reference}: not one of the given inputs; pass one of {', '.join(map(str, paths))}")
            index = resolved.index(Path(reference).resolve())
        self.grid = output_grid(self.datasets, paths, assumed, index)
        method = Resampling[resampling]
        self.views = [
            self.enter_context(WarpedVRT(d, src_crs=source_crs(d, p, assumed), crs=self.grid.crs, transform=self.grid.transform,
                                         width=self.grid.width, height=self.grid.height, resampling=method,
                                         dtype="float32", nodata=np.nan, src_nodata=d.nodata))
            for d, p in zip(self.datasets, paths)
        ]

    def check_readable(self) -> None:
        """Read each input's first and last pixel so a truncated file fails before any output exists."""
        for dataset, item in zip(self.datasets, self.inputs):
            for row, col in ((0, 0), (dataset.height - 1, dataset.width - 1)):
                try:
                    dataset.read(window=Window(col, row, 1, 1))
                except RasterioError as exc:
                    raise MamolError(f"{item.path}: cannot be read ({str(exc).splitlines()[0]}); the file may be truncated, re-export it") from None

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Bands of every input on the output grid ``[total_bands, h, w]`` (float32) and the per-input
        validity ``[M, h, w]`` (all bands finite: covered and not nodata)."""
        data, valid = [], []
        for view, item in zip(self.views, self.inputs):
            try:
                block = view.read(window=window)
            except RasterioError as exc:
                raise MamolError(f"{item.path}: reading failed ({str(exc).splitlines()[0]}); the file may be truncated, re-export it") from None
            data.append(block)
            valid.append(np.isfinite(block).all(axis=0))
        return np.concatenate(data, axis=0), np.stack(valid)
