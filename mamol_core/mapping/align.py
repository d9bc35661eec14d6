"""Putting mapping inputs on one grid without loading them: each raster is read through a
rasterio ``WarpedVRT`` onto the output grid, window by window.

The output grid takes the CRS and pixel alignment of a reference raster (by default the input with
the finest resolution, preferring projected CRSs over geographic ones; ``--reference`` chooses any
raster) and covers the union of all inputs' extents, which must form one area. Its pixel size is
the one the model was trained at (the same ground size in the reference's CRS: :func:`pixel_size_in`)
unless ``--reference`` was given, whose pixel size then wins, with a warning if it differs. Outside a raster's coverage, and where it holds nodata, its values read as
NaN, so that modality counts as missing there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NodataShadowWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from mamol_core.config import GridSpec
from mamol_core.data.rasters import Grid, box_of, check_real_values, gdal_reason, grid_of, is_flipped, open_raster, same_grid
from mamol_core.errors import MamolError
from mamol_core.mapping.crs import assign_crs_command, bounds_in, check_on_earth, crs_name, horizontal, parse_crs, pixel_size_in

log = logging.getLogger(__name__)

# A raster with both a nodata value and an alpha band reads its masks from the nodata value, as
# rasterio warns on every read; models of format 4 apply the alpha band themselves
# (data.reader.BandReading), older ones read it as GDAL's masks give it, as they always did.
warnings.filterwarnings("ignore", category=NodataShadowWarning)


@dataclass
class MapInput:
    """One modality raster given to the mapper."""

    name: str
    path: Path


def source_crs(dataset, path: Path, assumed: CRS | None, model_grid: GridSpec | None = None) -> CRS:
    """The raster's CRS, or the one given by ``--assume-crs``; a clear error when there is neither (naming
    the CRS of the ``model_grid`` the model was trained on, the likely one)."""
    if dataset.crs is not None:
        return dataset.crs
    if assumed is None:
        trained = crs_name(parse_crs(model_grid.crs)) if model_grid is not None and model_grid.crs else None
        raise MamolError(f"{path}: has no CRS; assign the one it is in{f' (the model was trained in {trained})' if trained else ''}: "
                         f"{assign_crs_command(path, vector=False)}, or pass --assume-crs EPSG:XXXX")
    return assumed


def differs(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return any(abs(x - y) > 0.01 * max(x, y) for x, y in zip(a, b))


def effective_grid(grid: Grid, assumed: CRS | None, path: Path) -> Grid:
    """The grid of the raster at ``path``, in ``assumed`` (``--assume-crs``) when it has no CRS of its own
    (horizontal: a compound CRS's vertical part is left out); refused where its extent cannot lie in that CRS."""
    t, w, h = grid.transform, grid.width, grid.height
    check_on_earth(grid.crs or assumed, [t @ (0, 0), t @ (w, 0), t @ (0, h), t @ (w, h)], path, assumed=grid.crs is None,
                   slack=max(grid.pixel_size) / 2 * (1 + 1e-9))
    return Grid(horizontal(grid.crs or assumed), grid.transform, grid.width, grid.height)


def shared_grid(grids: list[Grid], model_grid: GridSpec | None) -> Grid | None:
    """The grid every raster is on, when they share one at the model's training pixel size (or there is
    no model yet) and it runs north-up: they are then read as they are. ``None`` when they differ, or when
    their grid runs y-up (a map on it would be drawn upside down)."""
    if any(not same_grid(g, grids[0]) for g in grids[1:]) or is_flipped(grids[0]):
        return None
    if model_grid is not None:
        t, col, row = grids[0].transform, grids[0].width / 2, grids[0].height / 2
        trained = pixel_size_in(model_grid, grids[0].crs, (t.c + t.a * col + t.b * row, t.f + t.d * col + t.e * row))
        if trained is None or differs(grids[0].pixel_size, trained):
            return None
    return grids[0]


def output_grid(datasets: list, paths: list[Path], assumed: CRS | None, reference, reference_path: Path,
                model_grid: GridSpec | None = None, explicit: bool = False) -> Grid:
    """The output grid: CRS and alignment of the ``reference`` dataset, pixel size the model's training
    pixel size (when the reference was not chosen ``explicit``-ly and the units compare; else the
    reference's, with a warning if it differs from the model's), extent = union of the inputs."""
    crs_list = [source_crs(d, p, assumed, model_grid) for d, p in zip(datasets, paths)]
    ref_crs = horizontal(source_crs(reference, reference_path, assumed, model_grid))
    ref_bounds = box_of(reference)
    t = reference.transform
    if t.b != 0 or t.d != 0:
        raise MamolError(f"{reference_path}: a rotated grid cannot be the reference; warp it north-up first (gdalwarp)")
    size = (abs(t.a), abs(t.e))
    left, top = ref_bounds[0], ref_bounds[3]  # the reference's pixel edges, whichever way its rows run; the map runs north-up
    boxes = [bounds_in(crs, ref_crs, box_of(dataset), path, reference_path) for dataset, crs, path in zip(datasets, crs_list, paths)]
    pixels = [max((b[2] - b[0]) / d.width, (b[3] - b[1]) / d.height) for b, d in zip(boxes, datasets)]
    check_overlaps(boxes, paths, ref_bounds if explicit else None, reference_path, crs_list, pixels)
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    centre = ((union[0] + union[2]) / 2, (union[1] + union[3]) / 2)
    trained = pixel_size_in(model_grid, ref_crs, centre) if model_grid is not None else None
    trained_crs = crs_name(parse_crs(model_grid.crs)) if model_grid is not None else None
    if model_grid is not None and trained is None:
        log.warning("%s: its CRS units cannot be compared with the model's training grid (%s, pixel %g x %g); mapping at its "
                    "pixel size %g x %g%s", reference_path, trained_crs, *model_grid.pixel_size, *size,
                    "" if explicit else ", pass --reference RASTER to choose the grid")
    elif trained is not None and differs(size, trained):
        if explicit:
            log.warning("--reference %s: pixel %g x %g, but the model was trained at %g x %g%s; the inputs are read at the "
                        "reference's", reference_path, *size, *trained,
                        "" if tuple(model_grid.pixel_size) == trained else f" in the reference's CRS ({model_grid.pixel_size[0]:g} x "
                        f"{model_grid.pixel_size[1]:g} in {trained_crs})")
        else:
            log.info("reading the inputs at the model's training pixel size %g x %g%s (the finest input has %g x %g)", *trained,
                     "" if tuple(model_grid.pixel_size) == trained else
                     f" in {reference_path.name}'s CRS ({model_grid.pixel_size[0]:g} x {model_grid.pixel_size[1]:g} in "
                     f"{trained_crs})", *size)
            size = trained
    px, py = size
    col0 = math.floor((union[0] - left) / px + 1e-6)
    col1 = math.ceil((union[2] - left) / px - 1e-6)
    row0 = math.floor((top - union[3]) / py + 1e-6)
    row1 = math.ceil((top - union[1]) / py - 1e-6)
    transform = Affine(px, 0, left + col0 * px, 0, -py, top - row0 * py)
    return Grid(ref_crs, transform, col1 - col0, row1 - row0)


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (left, bottom, right, top) boxes share some area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def touch(a: tuple[float, ...], b: tuple[float, ...], slack: float) -> bool:
    """Whether two (left, bottom, right, top) boxes share some area or lie at most ``slack`` apart (rasters
    side by side, such as one sensor's flight line beside another's, clipped a pixel apart)."""
    return a[0] <= b[2] + slack and b[0] <= a[2] + slack and a[1] <= b[3] + slack and b[1] <= a[3] + slack


def gap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The distance between two (left, bottom, right, top) boxes (0 where they meet)."""
    return math.hypot(max(a[0] - b[2], b[0] - a[2], 0.0), max(a[1] - b[3], b[1] - a[3], 0.0))


def joined_group(boxes: list[tuple[float, ...]], start: int, pixels: list[float]) -> set[int]:
    """The boxes joined to ``start`` through boxes that overlap, border or lie within a pixel of each other
    (the coarser of the two rasters' ``pixels``)."""
    joined, frontier = {start}, [start]
    while frontier:
        current = frontier.pop()
        for index, box in enumerate(boxes):
            if index not in joined and touch(box, boxes[current], max(pixels[index], pixels[current])):
                joined.add(index)
                frontier.append(index)
    return joined


def check_overlaps(boxes: list[tuple[float, ...]], paths: list[Path], reference: tuple[float, ...] | None,
                   reference_path: Path, crs_list: list[CRS], pixels: list[float]) -> None:
    """Stop unless the inputs form one area, each joined to the others through inputs it overlaps or
    borders within a pixel (``pixels``: each input's pixel size), and an explicit ``reference`` overlaps some
    input: in one CRS, rasters that lie apart usually mean a wrong CRS. Inputs apart from each other that such a
    reference overlaps are mapped over the gap between them, with a warning. The message names an input outside
    the group of the grid's own raster and that raster, with the CRS each is read in, and the gap when it is
    small beside them (then rather a gap in the data than a wrong CRS)."""
    if reference is not None and not any(overlap(box, reference) for box in boxes):
        raise MamolError(f"{reference_path}: does not overlap any input; pass a reference raster of the same area (check its CRS)")
    start = next((i for i, path in enumerate(paths) if path == reference_path), 0)
    if reference is not None:
        groups: list[set[int]] = []
        for index in range(len(boxes)):
            if overlap(boxes[index], reference) and not any(index in group for group in groups):
                groups.append(joined_group(boxes, index, pixels))
        joined = set().union(*groups)
        if len(groups) > 1:
            log.warning("%s lie apart from each other and are joined only by --reference %s: the map covers the gap between them "
                        "(if they should meet, check their CRSs)", " and ".join(paths[min(g)].name for g in groups), reference_path.name)
        start = min(groups[0])
    else:
        joined = joined_group(boxes, start, pixels)
    apart = [index for index in range(len(boxes)) if index not in joined]
    if apart:
        first, other = apart[0], start
        names = [crs_name(crs) for crs in (crs_list[first], crs_list[other])]
        read_in = f"({names[0]} and {names[1]})" if names[0] != names[1] else f"(both {names[0]})"
        distance = min(gap(boxes[first], boxes[index]) for index in joined)
        sides = [min(b[2] - b[0], b[3] - b[1]) for b in (boxes[first], boxes[other])]
        if distance < 0.1 * min(sides):  # close beside them: a gap in the data, not a wrong CRS
            raise MamolError(f"{paths[first]}: lies {distance:.4g} CRS units from the area of {paths[other].name} {read_in}, apart from "
                             "it; to map both as one area, give a --reference raster that covers them")
        raise MamolError(f"{paths[first]}: neither overlaps nor borders the area of {paths[other].name} {read_in}; one of them may "
                         "have a wrong CRS: check both (gdalinfo), or pass rasters of the same area")


def finest(datasets: list, paths: list[Path], assumed: CRS | None, model_grid: GridSpec | None = None) -> int:
    """Index of the input with the smallest pixel area, among those whose CRS units compare with the
    model's training grid when there are any, else among the projected ones (a grid in degrees would
    map in degrees); areas are compared in the first candidate's CRS."""
    crs_list = [source_crs(d, p, assumed, model_grid) for d, p in zip(datasets, paths)]
    everyone = list(range(len(datasets)))
    comparable = [i for i in everyone if model_grid is not None and pixel_size_in(model_grid, crs_list[i]) is not None]
    candidates = comparable or [i for i in everyone if not crs_list[i].is_geographic] or everyone
    common = crs_list[candidates[0]]

    @functools.cache
    def area(index: int) -> float:
        left, bottom, right, top = bounds_in(crs_list[index], common, box_of(datasets[index]), paths[index], paths[candidates[0]])
        return abs((right - left) / datasets[index].width * (top - bottom) / datasets[index].height)

    chosen = candidates[int(np.argmin([area(i) for i in candidates]))]
    for index in sorted(set(everyone) - set(candidates)) if model_grid is None and not common.is_geographic else []:
        side, ratio = area(index) ** 0.5, (area(chosen) / area(index)) ** 0.5
        if ratio > 1.5:
            crs, target = common.to_string(), shlex.quote(f"{paths[index].stem}_projected.tif")  # side is in common's units
            log.warning(f"%s: its pixels (in {crs_list[index].to_string()}) are about {ratio:.2g} times finer on a side than those of "
                        f"the grid every input is read on, %s's, since a grid in degrees is not used; to keep its detail, warp it "
                        f"to a projected CRS at its resolution and give that as --reference (gdalwarp -t_srs {shlex.quote(crs)} "
                        f"-tr {side:.3g} {side:.3g} %s {target})", paths[index], paths[chosen].name, shlex.quote(str(paths[index])))
    return chosen


class ExactView:
    """A raster already on the output grid, read as it is (no resampling): nodata, masked pixels and
    pixels outside the raster read as NaN."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def read(self, window: Window) -> np.ndarray:
        d = self.dataset
        inside = window.col_off >= 0 and window.row_off >= 0 and window.col_off + window.width <= d.width \
            and window.row_off + window.height <= d.height
        return np.ma.filled(d.read(window=window, out_dtype="float32", masked=True, boundless=not inside), np.nan)


class AlignedInputs(contextlib.ExitStack):
    """Open inputs and a view of each on one grid: the raster itself where it is already on that
    grid, else a ``WarpedVRT``; use as a context manager. The grid is ``grid`` when given, else
    chosen as :func:`output_grid` says. Training, evaluation and mapping read through this."""

    def __init__(self, inputs: list[MapInput], assume_crs: str | None = None, reference: Path | None = None,
                 resampling: str = "bilinear", model_grid: GridSpec | None = None, grid: Grid | None = None) -> None:
        super().__init__()
        try:
            self._open(inputs, assume_crs, reference, resampling, model_grid, grid)
        except BaseException:
            self.close()
            raise

    def _open(self, inputs: list[MapInput], assume_crs: str | None, reference: Path | None, resampling: str,
              model_grid: GridSpec | None, grid: Grid | None) -> None:
        self.inputs = inputs
        self.datasets = [self.enter_context(open_raster(i.path)) for i in inputs]
        paths = [i.path for i in inputs]
        for dataset, path in zip(self.datasets, paths):
            check_real_values(dataset, path)
        assumed = self.assumed = parse_crs(assume_crs)
        own = [effective_grid(grid_of(d), assumed, p) for d, p in zip(self.datasets, paths)]
        shared = shared_grid(own, model_grid) if grid is None and reference is None else None
        if grid is not None:
            self.grid = grid
        elif shared is not None:
            self.grid = shared
        elif reference is None:
            index = finest(self.datasets, paths, assumed, model_grid)
            self.grid = output_grid(self.datasets, paths, assumed, self.datasets[index], paths[index], model_grid)
        else:
            chosen = self.enter_context(open_raster(reference))
            effective_grid(grid_of(chosen), assumed, Path(reference))
            self.grid = output_grid(self.datasets, paths, assumed, chosen, Path(reference), model_grid, explicit=True)
        method = Resampling[resampling]
        self.views = [
            ExactView(d) if same_grid(g, self.grid) else
            self.enter_context(WarpedVRT(d, src_crs=source_crs(d, p, assumed), crs=self.grid.crs, transform=self.grid.transform,
                                         width=self.grid.width, height=self.grid.height, resampling=method,
                                         dtype="float32", nodata=np.nan, src_nodata=d.nodata))
            for d, g, p in zip(self.datasets, own, paths)
        ]

    def check_readable(self) -> None:
        """Read each input's first and last pixel so a truncated file fails before any output exists."""
        for dataset, item in zip(self.datasets, self.inputs):
            for row, col in ((0, 0), (dataset.height - 1, dataset.width - 1)):
                try:
                    dataset.read(window=Window(col, row, 1, 1))
                except RasterioError as exc:
                    raise MamolError(f"{item.path}: cannot be read ({gdal_reason(exc)}); the file may be truncated, re-export it") from None

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Bands of every input on the output grid ``[total_bands, h, w]`` (float32) and the per-input
        validity ``[M, h, w]`` (all bands finite: covered and not nodata)."""
        data, valid = [], []
        for view, item in zip(self.views, self.inputs):
            try:
                block = view.read(window=window)
            except RasterioError as exc:
                raise MamolError(f"{item.path}: reading failed ({gdal_reason(exc)}); the file may be truncated, re-export it") from None
            data.append(block)
            valid.append(np.isfinite(block).all(axis=0))
        return np.concatenate(data, axis=0), np.stack(valid)
