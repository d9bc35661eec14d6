"""Raster basics: grids, opening a raster with a one-line error, a modality raster's header, writing GeoTIFFs."""

from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from mamol_core.config import GridSpec
from mamol_core.errors import MamolError
from mamol_core.mapping.crs import horizontal


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size in pixels."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (positive)."""
        return abs(self.transform.a), abs(self.transform.e)

    def spec(self) -> GridSpec:
        """What a model file records of the grid it was trained on."""
        return GridSpec(self.crs.to_string() if self.crs is not None else None, list(self.pixel_size))

    def describe(self) -> str:
        return f"{self.width}x{self.height} px, {self.crs or 'no CRS'}, origin ({self.transform.c:.10g}, {self.transform.f:.10g}), pixel {self.transform.a:.10g}"


@dataclass(frozen=True)
class ModalityRaster:
    """One modality's raster file and its band count (its nodata is applied where its data is read)."""

    name: str
    path: Path
    bands: int


def gdal_reason(exc: Exception) -> str:
    """The first line of what GDAL said behind a rasterio error (rasterio's own "Read failed. See previous
    exception" hides it in the cause), for one-line messages."""
    text = str(exc.__cause__ or exc) if "previous exception" in str(exc) else str(exc)
    return text.splitlines()[0] if text.strip() else "I/O error"


#: File endings of archives, which hold rasters but are none.
ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar")

#: A GDAL subdataset name: a driver's prefix (any case), a colon, then the file (quoted, or between colons)
#: and the variable (``NETCDF:"x.nc":ndvi``, ``HDF5:"x.h5"://grid/band``, ``GPKG:x.gpkg:table``,
#: ``HDF4_SDS:UNKNOWN:"x.hdf":0``, ``GTIFF_DIR:1:x.tif``); never a Windows drive (``C:``), whose prefix is one letter.
SUBDATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:(?P<rest>.+)$")


def subdataset_container(name: str) -> Path | None:
    """The existing file that the GDAL subdataset name ``name`` points into, ``None`` where ``name`` is
    no such name (a path with a colon in it, such as ``S2:B04.tif``, names no existing container). The
    file is the quoted part, else the first run of colon-separated parts that names a file (so a
    Windows drive, ``GPKG:C:\\d\\x.gpkg:table``, stays with its path)."""
    found = SUBDATASET_NAME.match(name)
    if found is None:
        return None
    rest = found.group("rest")
    quoted = re.search(r'"([^"]+)"', rest)
    if quoted:
        return Path(quoted.group(1)) if Path(quoted.group(1)).is_file() else None
    parts = rest.split(":")
    for first in range(len(parts)):
        for last in range(len(parts), first, -1):
            candidate = Path(":".join(parts[first:last]))
            if candidate.is_file():
                return candidate
    return None


def stack_hint(name: str, files: str = "BAND1.tif BAND2.tif …") -> str:
    """How to give one sensor whose bands are separate files: stack them, listed in the band order, into one virtual raster."""
    return f"gdalbuildvrt -separate -resolution highest {shlex.quote(name + '.vrt')} {files}, listing the band files in band order"


def subdataset_file(name: str) -> str:
    """The ``.tif`` name to convert subdataset ``name`` into: its last part (the variable), else ``raster.tif``."""
    last = re.split(r"[:/]", name.rstrip('"/'))[-1].strip('"')
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", last).strip("._")
    return f"{stem or 'raster'}.tif"


def open_raster(path: Path):
    """``rasterio.open`` with a one-line error naming the file."""
    if str(path).replace("\\", "/").startswith("/vsi"):  # Windows paths turn its slashes
        raise MamolError(f"{path}: GDAL virtual paths (/vsizip/, /vsicurl/, …) are not read; unzip or download the raster and pass its file")
    if not Path(path).exists():
        if subdataset_container(str(path)) is not None:
            raise MamolError(f"{path}: a GDAL subdataset name, not a file; convert it to a GeoTIFF first "
                             f"(gdal_translate {shlex.quote(str(path))} {subdataset_file(str(path))}) and pass that file")
        raise MamolError(f"{path}: no such file; check the path")
    if Path(path).suffix.lower() in ARCHIVES:
        raise MamolError(f"{path}: an archive, not a raster; unpack it and pass the raster inside")
    try:
        with warnings.catch_warnings():  # a raster without georeferencing is placed (or refused) by the callers, in one line
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioError as exc:
        if Path(path).is_dir():
            raise MamolError(f"{path}: a folder, not a raster; pass a raster file (a sensor's bands as separate files in it: stack "
                             f"them first, {stack_hint(Path(path).name, ' '.join(shlex.quote(str(Path(path) / b)) for b in ('BAND1.tif', 'BAND2.tif')) + ' …')})") from None
        raise MamolError(f"{path}: cannot be read as a raster ({gdal_reason(exc)}); pass a complete GeoTIFF or another GDAL raster") from None
    lost = missing_sources(dataset)
    if lost:
        dataset.close()
        lacks = f"sources {lost[0]} and {len(lost) - 1} more do" if len(lost) > 1 else f"source {lost[0]} does"
        raise MamolError(f"{path}: a VRT whose {lacks} not exist; build it again over its sources where they are now "
                         "(gdalbuildvrt), or move it back where it was built")
    if dataset.count == 0:
        inner = dataset.subdatasets
        dataset.close()
        if inner:
            raise MamolError(f"{path}: holds {len(inner)} subdatasets (variables) and no raster of its own; convert the one to use "
                             f"(gdalinfo lists them), e.g. gdal_translate {shlex.quote(inner[0])} {shlex.quote(Path(path).stem + '.tif')}")
        raise MamolError(f"{path}: holds no raster band; pass a raster")
    return dataset


def missing_sources(dataset) -> list[str]:
    """The files a VRT refers to that do not exist (a VRT moved away from sources it names relatively);
    GDAL's virtual paths are not files and are not checked, and a subdataset name counts as its container file."""
    if dataset.driver != "VRT":
        return []
    return [name for name in dataset.files[1:]
            if not name.startswith("/vsi") and not Path(name).exists() and subdataset_container(name) is None]


def grid_of(dataset) -> Grid:
    """An open raster's grid (in the horizontal part of a compound CRS); refused when only ground control
    points or RPCs place it (a raw scene, such as a Sentinel-1 GRD measurement file), since its pixels
    then lie on no map grid."""
    if dataset.crs is None and dataset.transform.is_identity and (dataset.gcps[0] or dataset.rpcs):
        by = "ground control points" if dataset.gcps[0] else "RPCs"
        raise MamolError(f"{dataset.name}: placed only by {by}, on no map grid; warp it onto one first "
                         f"(gdalwarp -t_srs EPSG:XXXX{' -rpc' if by == 'RPCs' else ''} {shlex.quote(dataset.name)} warped.tif)")
    return Grid(horizontal(dataset.crs), dataset.transform, dataset.width, dataset.height)


def box_of(dataset) -> tuple[float, float, float, float]:
    """A raster's ``(left, bottom, right, top)`` with left < right and bottom < top, whichever way its rows and
    columns run (rasterio's ``bounds`` of a grid stored y-up, with a positive pixel height, has bottom > top)."""
    left, bottom, right, top = dataset.bounds
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def is_flipped(grid: Grid) -> bool:
    """Whether an unrotated grid in a CRS runs y-up (positive pixel height) or x-left: GDAL reads it, but a map
    on it would be drawn upside down, so it is read through a warp onto a north-up grid instead of as it is. A
    grid without a CRS (a raster without georeferencing reads as pixel size 1 x 1, y-up) has no north to turn to."""
    t = grid.transform
    return grid.crs is not None and t.b == 0 and t.d == 0 and (t.a < 0 or t.e > 0)


def sample_windows(height: int, width: int, side: int = 64) -> list[Window]:
    """Up to five windows of at most ``side`` pixels spread over a grid: its centre and the centres of its quarters."""
    h, w = min(side, height), min(side, width)
    places = {(0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)}
    corners = {(min(max(int(height * r - h / 2), 0), height - h), min(max(int(width * c - w / 2), 0), width - w)) for r, c in places}
    return [Window(col, row, w, h) for row, col in sorted(corners)]


def alpha_opaque(dataset, band: int) -> int:
    """The value at which alpha band ``band`` (0-based) is opaque, as GDAL's warper reads it:
    2^NBITS − 1 where the band declares NBITS, 65535 for UInt16, 32767 for Int16, else 255."""
    nbits = dataset.tags(band + 1, "IMAGE_STRUCTURE").get("NBITS")
    if nbits:
        return 2 ** int(nbits) - 1
    return {"uint16": 65535, "int16": 32767}.get(dataset.dtypes[band], 255)


def marked_alpha(dataset) -> list[int]:
    """The 0-based indexes of the bands a raster marks alpha; none where it marks every band so."""
    marked = [i for i, kind in enumerate(dataset.colorinterp) if kind == ColorInterp.alpha]
    return marked if len(marked) < dataset.count else []


def alpha_bands(dataset, path: Path) -> list[int]:
    """The 0-based indexes of a raster's alpha bands: masks, not measurements (a pixel is data where
    its alpha is opaque, :func:`alpha_opaque`, as GDAL reads alpha in masks and warping alike). A
    band marked alpha that is no mask is refused with the fix: one whose values lie between
    transparent and opaque on over 5 % of the pixels sampled (GDAL marks the fourth band of a 4-band
    Byte GeoTIFF alpha by default, where it is often near-infrared), or one that is never opaque."""
    alphas = marked_alpha(dataset)
    for band in alphas:
        opaque = alpha_opaque(dataset, band)
        try:
            values = np.concatenate([dataset.read(band + 1, window=w).ravel() for w in sample_windows(dataset.height, dataset.width)])
        except RasterioError:
            continue  # a damaged file: the read that needs it says so
        between = float(((values > 0) & (values < opaque)).mean())
        if between > 0.05 or (values.max() > 0 and not (values >= opaque).any()):
            what = (f"holds values between transparent and opaque on {100 * between:.0f} % of the pixels sampled" if between > 0.05
                    else f"is never opaque ({opaque} for its type; the largest value sampled is {values.max():g})")
            raise MamolError(f"{path}: band {band + 1} is marked alpha but {what}, so it is no mask; if it is a band of the sensor "
                             f"(near-infrared, say), mark it so (gdal_edit.py -colorinterp_{band + 1} undefined {shlex.quote(str(path))}), "
                             f"else make {opaque} its opaque value")
    return alphas


def measurement_bands(dataset, path: Path) -> list[int]:
    """The 0-based indexes of a raster's bands that hold measurements: all but its alpha bands (:func:`alpha_bands`)."""
    alphas = alpha_bands(dataset, path)
    return [i for i in range(dataset.count) if i not in alphas]


def check_real_values(dataset, path: Path) -> None:
    """Refuse a sensor raster of complex numbers (SAR single-look complex data): read as real numbers
    it would give only the real part, no measurement of the ground."""
    if any(str(kind).startswith("complex") for kind in dataset.dtypes):
        every = " --allBands=A" if dataset.count > 1 else ""
        raise MamolError(f"{path}: holds complex values ({dataset.dtypes[0]}), such as single-look complex SAR; give its amplitude or "
                         f"intensity instead (gdal_calc.py -A {shlex.quote(str(path))}{every} --calc=\"abs(A)\" --type=Float32 --outfile=amplitude.tif)")


def describe_modality(name: str, path: Path) -> tuple[ModalityRaster, Grid]:
    """Read a sensor raster's header: its :class:`ModalityRaster` (bands: those with measurements) and
    :class:`Grid`; complex values are refused."""
    with open_raster(path) as src:
        check_real_values(src, Path(path))
        return ModalityRaster(name, Path(path), len(measurement_bands(src, Path(path)))), grid_of(src)


def same_grid(a: Grid, b: Grid) -> bool:
    return a.crs == b.crs and (a.width, a.height) == (b.width, b.height) and a.transform.almost_equals(b.transform, precision=1e-6)


def write_raster(path: Path, array: np.ndarray, transform: Affine, nodata: float | None = None, crs: str = "EPSG:32632") -> None:
    """Write a ``[H, W]`` or ``[B, H, W]`` array as a tiled, deflate-compressed GeoTIFF."""
    array = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype=array.dtype.name,
                   crs=CRS.from_string(crs), transform=transform, nodata=nodata, compress="deflate", tiled=True,
                   blockxsize=256 if array.shape[2] >= 256 else 16 * max(1, array.shape[2] // 16),
                   blockysize=256 if array.shape[1] >= 256 else 16 * max(1, array.shape[1] // 16))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
