"""CRSs: reading one the user gives, and the model's training pixel size as the same ground size in
another CRS (measured with PROJ on the ellipsoid where the map lies)."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds

from mamol_core.config import GridSpec
from mamol_core.errors import MamolError


def parse_crs(text: str | None, source: str = "--assume-crs") -> CRS | None:
    if text is None:
        return None
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise MamolError(f"{source} {text!r}: not a CRS GDAL knows; use e.g. EPSG:32632") from None


def check_on_earth(crs: CRS | None, corners: list[tuple[float, float]], path: Path, assumed: bool = False,
                   slack: float = 0.0, vector: bool = False) -> None:
    """Refuse a raster whose corners cannot lie in its CRS: angles past the poles or longitudes past a
    full turn either way in a geographic CRS, or a centre that PROJ cannot place on the Earth in a
    projected one. That is a CRS set wrongly (metres labelled as degrees, say); ``assumed`` says it
    came from ``--assume-crs``; ``slack`` (half a pixel) allows pixel-centred grids at the poles; ``vector``
    files get the vector command that assigns a CRS."""
    if crs is None:
        return
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    if crs.is_geographic:
        unit, radians = crs.units_factor
        pole, turn = math.pi / 2 / radians, 2 * math.pi / radians
        latitude, longitude = max(map(abs, ys)), max(map(abs, xs))
        if latitude <= pole + slack and longitude <= turn + slack:
            return
        why = (f"latitudes up to {latitude:.10g} {unit}s, beyond ±{pole:g}" if latitude > pole + slack
               else f"longitudes up to {longitude:.10g} {unit}s, beyond ±{turn:g}")
    else:
        import pyproj

        centre = (sum(xs) / len(xs), sum(ys) / len(ys))
        try:
            lon, lat = pyproj.Transformer.from_crs(as_pyproj(crs), pyproj.CRS.from_epsg(4326), always_xy=True).transform(*centre)
        except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError):
            return  # PROJ cannot judge this CRS: leave it to the warp
        if math.isfinite(lon) and math.isfinite(lat) and abs(lat) <= 90:
            return
        why = f"its centre ({centre[0]:.10g}, {centre[1]:.10g}) is off the Earth in that projection"
    if assumed:
        raise MamolError(f"--assume-crs {crs.to_string()}: {path} cannot lie in it ({why}); give the CRS its coordinates are in")
    raise MamolError(f"{path}: its extent cannot lie in its CRS {crs.to_string()} ({why}); the CRS is wrong: assign the right one "
                     f"({assign_crs_command(path, vector)})")


def crs_name(crs: CRS | None) -> str:
    """A CRS in a few words: its EPSG code, else its name (never a whole WKT in a one-line message)."""
    if crs is None:
        return "no CRS"
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else as_pyproj(crs).name


def bounds_in(crs: CRS, target: CRS, box: tuple[float, float, float, float], path: Path | str,
              target_path: Path | str) -> tuple[float, float, float, float]:
    """``box``, in ``crs`` (that of ``path``), in ``target`` (that of ``target_path``); refused as
    :func:`check_related` says where the two cannot be related."""
    check_related(crs, target, path, target_path)
    return transform_bounds(crs, target, *box)


def check_related(crs: CRS, target: CRS, path: Path | str, target_path: Path | str, vector: bool = False) -> None:
    """A one-line error where no coordinate operation relates ``crs`` (that of ``path``, a ``vector`` file or a
    raster) and ``target`` (that of the raster ``target_path``, or of the rasters a text such as "the sensor rasters"
    names), as for a local (engineering) CRS, which some LiDAR tools write, and any other. It names the file whose
    CRS is the local one, with the command that assigns the CRS it is in."""
    import pyproj

    if crs == target:
        return
    try:
        pyproj.Transformer.from_crs(as_pyproj(crs), as_pyproj(target))
    except pyproj.exceptions.ProjError:
        if is_local(target) and not is_local(crs):
            if not isinstance(target_path, Path):
                raise MamolError(f"{path}: its CRS ({crs_name(crs)}) cannot be related to {crs_name(target)}, the CRS of {target_path}, a "
                                 f"local (engineering) CRS; assign {target_path} the CRS their coordinates are in (gdal_edit.py -a_srs "
                                 "EPSG:XXXX on each)") from None
            path, crs, target_path, target, vector = target_path, target, path, crs, False
        kind = ", a local (engineering) CRS" if is_local(crs) else ""
        raise MamolError(f"{path}: its CRS ({crs_name(crs)}{kind}) cannot be related to {crs_name(target)}, the CRS of {target_path}; "
                         f"assign it the CRS its coordinates are in: {assign_crs_command(Path(path), vector=vector)}") from None


def is_local(crs: CRS) -> bool:
    """Whether ``crs`` is a local (engineering) CRS: neither geographic nor projected, related to no other."""
    return not crs.is_geographic and not crs.is_projected


def assign_crs_command(path: Path, vector: bool) -> str:
    """The GDAL command that gives the file at ``path`` a CRS: a copy for a vector file, in place for a raster."""
    if vector:
        return f"ogr2ogr -a_srs EPSG:XXXX {shlex.quote(Path(path).stem + '_fixed.gpkg')} {shlex.quote(str(path))}"
    return f"gdal_edit.py -a_srs EPSG:XXXX {shlex.quote(str(path))}"


def metres_per_unit(crs: CRS | None) -> float | None:
    """Metres per CRS unit of a projected CRS; ``None`` for a geographic or unknown one."""
    if crs is None or crs.is_geographic:
        return None
    try:
        return float(crs.linear_units_factor[1])
    except CRSError:
        return None


def horizontal(crs: CRS | None) -> CRS | None:
    """``crs`` without the vertical part of a compound CRS (a height model's ``UTM 18N + NAVD88 height``):
    grids, maps and their CRSs are horizontal; ``crs`` itself where it has none."""
    if crs is None or not crs.to_wkt().startswith(("COMPD_CS", "COMPOUNDCRS")):
        return crs
    import pyproj

    try:
        parts = as_pyproj(crs).sub_crs_list
        return CRS.from_wkt(next(part for part in parts if not part.is_vertical).to_wkt())
    except (pyproj.exceptions.CRSError, StopIteration, CRSError):
        return crs


def crs_unit(crs: CRS) -> str | None:
    """The name of the unit ``crs`` counts its coordinates in (``metre``, ``US survey foot``, ``degree``);
    ``None`` where PROJ cannot tell."""
    import pyproj

    try:
        return as_pyproj(crs).axis_info[0].unit_name
    except (pyproj.exceptions.CRSError, IndexError, CRSError):
        return None


def height_unit(crs: CRS | None) -> tuple[str, float, bool] | None:
    """The unit ``crs`` counts heights in, as ``(name, metres per unit, vertical)``: a compound CRS's
    vertical unit (``vertical``), else a projected CRS's linear unit, which heights stored with it are
    usually in; ``None`` for a geographic, local or unknown CRS."""
    if crs is None:
        return None
    import pyproj

    try:
        whole = as_pyproj(crs)
        parts = whole.sub_crs_list if whole.is_compound else [whole]
        vertical = next((part for part in parts if part.is_vertical), None)
        found = vertical or next((part for part in parts if part.is_projected), None)
        if found is None:
            return None
        axis = found.axis_info[0]
        return axis.unit_name, float(axis.unit_conversion_factor), vertical is not None
    except (pyproj.exceptions.CRSError, IndexError, CRSError):
        return None


def pixel_size_in(spec: GridSpec, crs: CRS | None, at: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """The model's training pixel size expressed in ``crs``'s units, or ``None`` when it cannot be.

    In the model's own CRS (or between two geographic CRSs) it is the recorded size. Given a point ``at``
    (in ``crs``) where the map lies, it is the same ground size there, along each grid axis: a model
    trained at 2 m maps a Web-Mercator raster at 46° N at about 2.88 units, a raster in degrees at the
    degrees of 2 m (the training pixel's ground size is taken at the same place, as if trained nearby).
    Without ``at``, or where PROJ cannot tell, two projected CRSs are converted by their units alone.
    ``None`` when either CRS is unknown, or the units cannot be compared without a place."""
    model_crs = parse_crs(spec.crs, "the model's training grid") if spec.crs else None
    if model_crs is None and crs is None:
        return tuple(spec.pixel_size)
    if model_crs is None or crs is None:
        return None
    if model_crs == crs or (model_crs.is_geographic and crs.is_geographic):
        return tuple(spec.pixel_size)
    if at is not None:
        local = same_ground_size(tuple(spec.pixel_size), model_crs, crs, at)
        if local is not None:
            return local
    model_factor, factor = metres_per_unit(model_crs), metres_per_unit(crs)
    if model_factor is None or factor is None:
        return None
    return spec.pixel_size[0] * model_factor / factor, spec.pixel_size[1] * model_factor / factor


def same_ground_size(size: tuple[float, float], source: CRS, target: CRS, at: tuple[float, float]) -> tuple[float, float] | None:
    """``size`` (x, y, in ``source`` units) as ``target`` units spanning the same ground distances along
    each grid axis at the point ``at`` of ``target``; ``None`` where PROJ cannot place the point.

    The ground size of ``size`` is measured at the same place in ``source`` when the place lies in that
    CRS's area of use (a model in Web Mercator or degrees, trained nearby); outside it (a model trained
    in UTM zone 32 mapping elsewhere) a projected ``source`` counts by its nominal units."""
    import pyproj

    try:
        source_crs, target_crs = as_pyproj(source), as_pyproj(target)
        lon, lat = pyproj.Transformer.from_crs(target_crs, pyproj.CRS.from_epsg(4326), always_xy=True).transform(*at)
        area = source_crs.area_of_use
        nearby = area is None or (area.west <= lon <= area.east or area.west > area.east) and area.south <= lat <= area.north
        if source_crs.is_projected and not nearby:
            per_unit = float(source_crs.axis_info[0].unit_conversion_factor)
            ground = (size[0] * per_unit, size[1] * per_unit)
        else:
            where = pyproj.Transformer.from_crs(target_crs, source_crs, always_xy=True).transform(*at)
            ground = ground_lengths(source_crs, where, size)
        if ground is None:
            return None
        radians = target_crs.axis_info[0].unit_conversion_factor if target_crs.is_geographic else None
        per_unit = 6_371_000 * radians if radians else float(target_crs.axis_info[0].unit_conversion_factor)
        step = (ground[0] / per_unit, ground[1] / per_unit)  # a first guess, refined by measuring it there
        measured = ground_lengths(target_crs, at, step)
    except (pyproj.exceptions.ProjError, pyproj.exceptions.CRSError, IndexError, ValueError, ZeroDivisionError):
        return None
    if measured is None:
        return None
    return step[0] * ground[0] / measured[0], step[1] * ground[1] / measured[1]


def as_pyproj(crs: CRS):
    """``crs`` as a pyproj CRS, from its EPSG code when it has one (so its area of use is known)."""
    import pyproj

    code = crs.to_epsg()
    return pyproj.CRS.from_epsg(code) if code else pyproj.CRS.from_wkt(crs.to_wkt())


def ground_pixel(dataset, assumed: CRS | None = None) -> float | None:
    """The side of an open raster's own pixels on the ground in metres (the geometric mean of its x and y sizes at its
    centre), in its CRS or, where it has none, ``assumed`` (``--assume-crs``); ``None`` without either, or where the
    CRS gives none (a local one)."""
    import pyproj

    crs = horizontal(dataset.crs or assumed)
    if crs is None:
        return None
    t = dataset.transform
    try:
        lengths = ground_lengths(as_pyproj(crs), t @ (dataset.width / 2, dataset.height / 2), dataset.res)
    except pyproj.exceptions.ProjError:
        return None
    return math.sqrt(lengths[0] * lengths[1]) if lengths else None


def ground_lengths(crs, at: tuple[float, float], step: tuple[float, float]) -> tuple[float, float] | None:
    """Metres on the WGS 84 ellipsoid spanned by ``step[0]`` units along ``crs``'s x axis and ``step[1]``
    along its y axis, centred on the point ``at`` (a pyproj CRS); ``None`` outside its domain."""
    import pyproj

    x, y = at
    lons, lats = pyproj.Transformer.from_crs(crs, pyproj.CRS.from_epsg(4326), always_xy=True).transform(
        [x - step[0] / 2, x + step[0] / 2, x, x], [y, y, y - step[1] / 2, y + step[1] / 2])
    geod = pyproj.Geod(ellps="WGS84")
    east = geod.inv(lons[0], lats[0], lons[1], lats[1])[2]
    north = geod.inv(lons[2], lats[2], lons[3], lats[3])[2]
    lengths = (east, north)
    return lengths if all(math.isfinite(v) and v > 0 for v in lengths) else None
