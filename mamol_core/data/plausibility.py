"""Whether an input's values are plausible, for warnings: a raster in another unit or scale than
the model was trained on (reflectance × 10 000 instead of 0–1, digital numbers, decibels instead of
linear power, heights in feet instead of metres), or one that marks missing data with a fill value it
does not declare as nodata, is read by the model as measurements and maps wrongly without any error."""

from __future__ import annotations

import math
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from mamol_core.config import ValueUnit
from mamol_core.data.rasters import measurement_bands, open_raster, sample_windows
from mamol_core.data.reader import BandReading, ModelReader
from mamol_core.mapping.crs import crs_name, ground_pixel, height_unit

#: A band looks scaled up when its spread is this many times the training one and its median this
#: many training standard deviations from the training mean; scaled down when all its values lie
#: within a training standard deviation / ``MAX_SPREAD_RATIO`` of zero while training's lay away from
#: zero; and in another unit when its sign is the opposite of training's (dB against linear power).
MAX_SHIFT = 10.0
MAX_SPREAD_RATIO = 25.0
#: Fewer valid pixels than this say nothing; more than ``MAX_PIXELS`` are subsampled.
MIN_PIXELS = 100
MAX_PIXELS = 100_000
#: How many of a VRT's sources are opened to compare pixel sizes.
MAX_SOURCES = 64
#: A share of a modality's covered pixels with data in only some of its bands above which it is worth a warning.
MAX_PARTIAL = 0.02
#: The side, in pixels, of the view in which a collar of zeros around the data is looked for, and the
#: size above which it is looked for only in rasters with overviews.
COLLAR_VIEW = 512
COLLAR_PIXELS = 100_000_000
#: Values that software writes for "no data" (GDAL, ArcGIS, ENVI, SRTM voids, float32's lowest and highest, R's
#: raster package, unsigned 16-bit's highest).
FILL_VALUES = (-9999.0, -32768.0, -32767.0, -3.4028234663852886e38, 3.4028234663852886e38, -3.4e38, 3.4e38, -1e10, 65535.0)
#: One value (or usual fill values) under at most ``OUTLIER_SHARE`` of a band's training pixels, farther than
#: ``OUTLIER_SPREADS`` robust spreads from its median, is taken for a fill not declared; where it makes the band's standard
#: deviation, its scale in the model, more than ``OUTLIER_EFFECT`` times what the other values give, that is said too.
OUTLIER_SPREADS = 50.0
OUTLIER_SHARE = 0.01
OUTLIER_EFFECT = 3.0
#: Metres per unit of the length units that rasters declare for their bands (GDAL's unit type, in lower case).
US_FOOT = 1200 / 3937
LENGTH_UNITS = {"m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0, "km": 1000.0, "dm": 0.1, "cm": 0.01,
                "mm": 0.001, "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "international foot": 0.3048, "us survey foot": US_FOOT,
                "us survey feet": US_FOOT, "ftus": US_FOOT, "us-ft": US_FOOT, "us_survey_foot": US_FOOT}
#: Units whose sizes differ by less than this factor are taken as one (the US survey foot and the foot).
SAME_UNIT = 1.01


def band_mismatch(values: np.ndarray, mean: float, std: float) -> str | None:
    """What is unlike training about one band's valid ``values`` (``None`` where nothing is): values
    scaled up or down by a large factor (a unit change multiplies median and spread alike). A scene
    that differs only in level (another site's absolute heights) or in spread (flat water, where
    training saw towns) is not flagged."""
    if values.size < MIN_PIXELS:
        return None
    values = values[:: values.size // MAX_PIXELS + 1].astype(np.float64)
    p5, low, median, high, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    spread = (high - low) / 1.349 or float(values.std())
    up = spread > MAX_SPREAD_RATIO * std and abs(median - mean) > MAX_SHIFT * std
    down = abs(mean) > std and max(abs(p5), abs(p95)) < std / MAX_SPREAD_RATIO
    flipped = (mean < -std and p5 >= 0) or (mean > std and p95 <= 0)  # e.g. linear power where training had dB
    if up or down or flipped:
        return f"median {median:.4g}, spread {spread:.4g}; training {mean:.4g} ± {std:.4g}"
    return None


def fill_under_training(values: np.ndarray, numbers: list[int], path: Path, method: str) -> str | None:
    """One warning for the raster at ``path`` where some of its bands (``values``: ``[bands, training pixels]``, band
    ``numbers`` as the file counts them) hold, under a few training pixels (:data:`OUTLIER_SHARE`), one value, or usual
    fill values (:data:`FILL_VALUES`), farther than :data:`OUTLIER_SPREADS` robust spreads from the others: a fill not
    declared as nodata, which training reads as a measurement and, with ``method`` ``standard``, as the band's scale
    (said where it makes it :data:`OUTLIER_EFFECT` times what the other values give); ``None`` otherwise."""
    found = []
    for number, band in zip(numbers, values):
        p1, low, median, high, p99 = np.percentile(band, [1, 25, 50, 75, 99])
        spread = (high - low) / 1.349 or (p99 - p1) / 4.65
        far = np.abs(band - median) > OUTLIER_SPREADS * spread if spread else np.zeros(band.shape, bool)
        count = int(far.sum())
        odd = np.unique(band[far])
        if count and count <= OUTLIER_SHARE * band.size and (odd.size == 1 or all(is_fill_value(v) for v in odd)):
            found.append((number, odd, count, float(band.std()), float(band[~far].std())))
    if not found:
        return None
    number, odd, count, scale, others = found[0]
    one = len(found) == 1
    which = f"{odd[0]:g}" if odd.size == 1 else " and ".join(f"{v:g}" for v in odd)
    flat = method == "standard" and scale > OUTLIER_EFFECT * others
    return (f"{path}: band{'' if one else 's'} {band_ranges([f[0] for f in found])} hold{'s' if one else ''} {which} under {count} of the "
            f"{values.shape[1]} training pixels, far from the other values: a fill not declared as nodata? Training reads it as a "
            "measurement" + (f", and as the band's scale (band {number}: {scale:.4g}, where the other values give {others:.4g}), so the "
                             "model reads the band nearly flat" if flat else "")
            + f"; if {odd[0]:g} marks missing data, declare it (gdal_edit.py -a_nodata {odd[0]:g} {shlex.quote(str(path))}) and train again")


def is_fill_value(value: float) -> bool:
    """Whether ``value`` is one of the usual fill values (:data:`FILL_VALUES`)."""
    return any(np.isclose(value, fill, rtol=1e-6) for fill in FILL_VALUES)


def band_ranges(numbers: list[int]) -> str:
    """Band numbers in few characters: ``1-24``, ``3, 5-7``."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)) for run in runs)


def scale_warnings(data: np.ndarray, valid: np.ndarray, reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """One line per given modality whose raw values (``data`` as ``reader`` read them, in its model's
    band layout; ``valid`` per modality) are unlike the training statistics on most of its bands. Where
    the raster's own metadata scaled it, the line says so and how to read its stored numbers instead."""
    lines, declared = [], reader.declared_scaling()
    for index, spec in enumerate(reader.modalities):
        bands = data[reader.layout[index]]
        if spec.name not in paths or not spec.mean:
            continue
        found = [(b, band_mismatch(bands[b][valid[index]], spec.mean[b], spec.std[b])) for b in range(spec.bands)]
        odd = [(b, what) for b, what in found if what is not None]
        if len(odd) * 2 > spec.bands:
            band, what = odd[0]
            how = declared.get(spec.name)
            check = (f"check the raster's units and its declared scale and offset (gdal_edit.py -scale 1 -offset 0 "
                     f"{shlex.quote(str(paths[spec.name]))} makes it read as stored)" if how else "check the raster's units")
            lines.append(f"{paths[spec.name]}: its {spec.name} values{f', {how},' if how else ''} look unlike those the model was trained on "
                         f"(band {reader.file_bands(spec.name)[band]}: {what}"
                         f"{f'; {len(odd)} of {spec.bands} bands are off like this' if spec.bands > 1 else ''}): "
                         f"another unit or scale (reflectance × 10 000, digital numbers, dB)? The model may misread it; {check}")
    return lines


def values_unit(dataset, path: Path, assumed: CRS | None = None) -> ValueUnit | None:
    """The length unit of the values of ``dataset`` (the raster at ``path``; ``assumed`` its CRS where it
    has none): the unit every measurement band declares (GDAL's unit type), else its CRS's unit for
    heights (:func:`height_unit`), presumed. A declared unit that GDAL gave the bands from a compound
    CRS's vertical axis counts as presumed too: it says what heights would be in, not that the bands
    hold heights. ``None`` where bands declare a unit that is no length, several, or only some declare
    one, or the CRS tells none (geographic, absent)."""
    units = [dataset.units[b].strip() if dataset.units[b] else "" for b in measurement_bands(dataset, path)]
    crs_unit = height_unit(dataset.crs or assumed)
    if any(units):
        if len(set(units)) > 1 or units[0].lower() not in LENGTH_UNITS:
            return None
        metres = LENGTH_UNITS[units[0].lower()]
        from_vertical = crs_unit is not None and crs_unit[2] and abs(math.log(crs_unit[1] / metres)) < math.log(SAME_UNIT)
        return ValueUnit(units[0], metres, not from_vertical)
    return ValueUnit(crs_unit[0], crs_unit[1], False) if crs_unit is not None else None


def presumed_from(dataset, assumed: CRS | None) -> str:
    """Where a presumed unit of ``dataset``'s values comes from, for messages."""
    if dataset.crs is None:
        return f"--assume-crs {crs_name(assumed)}"
    found = height_unit(dataset.crs)
    return "its vertical CRS" if found is not None and found[2] else "its CRS"


def looks_converted(values: np.ndarray, std: float, factor: float) -> bool:
    """Whether one band's valid ``values`` spread clearly nearer the training ``std`` once multiplied by
    ``factor`` (another length unit): nearer by half the factor at least, on a log scale, so that a site
    with other relief is not taken for another unit. Their level is not compared: absolute heights
    differ between sites by more than any unit does."""
    if values.size < MIN_PIXELS:
        return False
    spread = float(values[:: values.size // MAX_PIXELS + 1].astype(np.float64).std())
    if spread <= 0 or std <= 0:
        return False
    now, converted = abs(math.log(spread / std)), abs(math.log(spread * factor / std))
    return converted < now - abs(math.log(factor)) / 2


def unit_warnings(data: np.ndarray, valid: np.ndarray, reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """One line per given modality whose raster holds its values in another length unit than its
    training raster did (``ModalitySpec.unit``): a height model in feet read by a model trained on
    metres sees every height 3.28 times too large, which :func:`scale_warnings` does not notice. Where
    both rasters declare their units, any difference is told; where a unit is only presumed from a CRS
    (imagery in a State Plane CRS, metre heights in a CRS counting in feet), only when most bands'
    values (``data`` as ``reader`` read them) also spread clearly nearer training's once converted
    (:func:`looks_converted`)."""
    lines = []
    for index, spec in enumerate(reader.modalities):
        bands = data[reader.layout[index]]
        trained, position = spec.unit, reader.order[index]
        if spec.name not in paths or trained is None or not spec.mean:
            continue
        path, dataset = paths[spec.name], reader.aligned.datasets[position]
        found = values_unit(dataset, path, reader.aligned.assumed)
        factor = found.metres / trained.metres if found is not None else 1.0  # what turns its values into the training unit
        if abs(math.log(factor)) < math.log(SAME_UNIT):
            continue
        if not (found.declared and trained.declared):
            near = [looks_converted(bands[b][valid[index]], spec.std[b], factor) for b in range(spec.bands)]
            if sum(near) * 2 <= spec.bands:
                continue
        every = " --allBands=A" if dataset.count > 1 else ""
        size = f"{1 / factor:.3g} times too large" if factor < 1 else f"{factor:.3g} times too small"
        name, where = shlex.quote(trained.name), shlex.quote(str(path))
        converted = shlex.quote(str(path.with_name(f"{path.stem}_{re.sub(r'[^A-Za-z0-9]+', '_', trained.name).strip('_')}.tif")))
        found_how = ("declared" if found.declared else
                     f"presumed from {presumed_from(dataset, reader.aligned.assumed)}, no unit declared; their spread fits that")
        trained_how = "declared" if trained.declared else "presumed from its training raster's CRS"
        declare = f", or, if they are in {trained.name} already, declare that (gdal_edit.py -units {name} {where})" if found.declared else ""
        lines.append(f"{path}: its {spec.name} values are in {found.name} ({found_how}), where the model's were in {trained.name} "
                     f"({trained_how}): the model reads heights or lengths {size}; convert them (gdal_calc.py -A {where}{every} "
                     f"--calc=\"A*{factor:.7g}\" --type=Float32 --outfile={converted}, then gdal_edit.py -units {name} {converted})"
                     f"{declare}")
    return lines


def partial_bands(data: np.ndarray, reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """One line per given modality whose raw ``data`` (as ``reader`` read it: NaN where a band holds no
    data) has data in only some of its bands on more than ``MAX_PARTIAL`` of its covered pixels: bands
    that cover different areas, or a nodata value that one band also measures (0 in a normalised DSM).
    mamol counts such a pixel as that modality missing. Alpha bands (masks) are not counted."""
    lines = []
    for index, spec in enumerate(reader.modalities):
        bands = data[reader.layout[index]].reshape(spec.bands, -1)
        reading = reader.readings[index]
        if spec.name not in paths or reading is None:
            continue
        marked = {b for b, kind in enumerate(reader.aligned.datasets[reader.order[index]].colorinterp) if kind == ColorInterp.alpha}
        kept = [i for i, band in enumerate(reading.measurements) if band not in marked]
        has = np.isfinite(bands[kept])
        covered = has.any(axis=0)
        partial = covered & ~has.all(axis=0)
        if len(kept) < 2 or partial.sum() <= MAX_PARTIAL * max(covered.sum(), 1):
            continue
        empty_share = (~has[:, partial]).mean(axis=1)
        empty = [reading.measurements[kept[i]] + 1 for i in np.flatnonzero(empty_share >= empty_share.max() / 2)]
        lines.append(f"{paths[spec.name]}: on {partial.sum() / covered.sum():.0%} of the pixels read, only some of its bands hold data "
                     f"({'band' if len(empty) == 1 else 'bands'} {', '.join(map(str, empty))} {'holds' if len(empty) == 1 else 'hold'} "
                     f"none there), and {spec.name} counts "
                     f"as missing on such pixels: if that is a nodata value the band also measures, declare another; if its bands "
                     f"cover different areas, stack bands that cover the same area")
    return lines


def dead_bands(data: np.ndarray, valid: np.ndarray, reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """One line per given modality some of whose bands hold one value at every valid pixel of ``data`` (raw, as
    ``reader`` read it, ``valid`` per modality) where the model's training values of that band varied around
    another (more than one standard deviation away, or a usual fill value): a dead band or an undeclared fill,
    which the model reads as a measurement. A band constant at training too (its mean that value), or held at a
    value training's took often (an nDSM's ground at 0), is left alone."""
    lines = []
    for index, spec in enumerate(reader.modalities):
        bands = data[reader.layout[index]][:, valid[index]]
        if spec.name not in paths or not spec.std or bands.shape[1] < MIN_PIXELS:
            continue
        flat = [b for b in range(spec.bands) if (bands[b] == bands[b, 0]).all() and bands[b, 0] != spec.mean[b]
                and (abs(bands[b, 0] - spec.mean[b]) > spec.std[b] or is_fill_value(bands[b, 0]))]
        if not flat:
            continue
        numbers = [reader.file_bands(spec.name)[b] for b in flat]
        one = len(flat) == 1
        lines.append(f"{paths[spec.name]}: band{'' if one else 's'} {band_ranges(numbers)} hold{'s' if one else ''} one value "
                     f"({bands[flat[0], 0]:g}) at every pixel sampled, where the model's training values varied (band {numbers[0]}: "
                     f"{spec.mean[flat[0]]:.4g} ± {spec.std[flat[0]]:.4g}): a dead band, or a fill value not declared as nodata? "
                     f"The model reads {'it' if one else 'them'} as measurements; if {'it holds' if one else 'they hold'} no data, give a raster "
                     f"whose band{'' if one else 's'} hold{'s' if one else ''} data, or leave {spec.name} out (the map then comes from "
                     "the other sensors)")
    return lines


#: An input whose own pixels are more than this many times as large on the ground as those of the raster the
#: model was trained on for that sensor is warned about.
COARSER = 2.0


def band_names(dataset, reading: BandReading) -> list[str]:
    """The descriptions of a raster's measurement bands, in order, where every one has its own; else ``[]``."""
    names = [(dataset.descriptions[band] or "").strip() for band in reading.measurements]
    return names if all(names) and len(set(names)) == len(names) else []


def raster_warnings(reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """Lines for the given inputs unlike the rasters the model was trained on: bands that carry the training bands'
    names in another order (with the ``gdal_translate`` line that restores it), and pixels much coarser on the ground
    (:data:`COARSER`). Model files that recorded neither say nothing."""
    lines = []
    for spec, index, reading in zip(reader.modalities, reader.order, reader.readings):
        if spec.name not in paths or reading is None:
            continue
        dataset, path = reader.aligned.datasets[index], paths[spec.name]
        names = band_names(dataset, reading)
        if spec.band_names and names != spec.band_names and sorted(names) == sorted(spec.band_names):
            moved = next(i for i, (a, b) in enumerate(zip(names, spec.band_names)) if a != b)
            order = [reading.measurements[names.index(name)] + 1 for name in spec.band_names]
            rest = [band + 1 for band in range(dataset.count) if band not in reading.measurements]  # alpha bands, kept last
            lines.append(f"{path}: its bands are those of the {spec.name} raster the model was trained on in another order (band "
                         f"{reading.measurements[moved] + 1} is {names[moved]!r}, which was band {spec.band_names.index(names[moved]) + 1}"
                         f"); the model reads bands by position, so put them in its order: gdal_translate "
                         f"{' '.join(f'-b {b}' for b in order + rest)} {shlex.quote(str(path))} "
                         f"{shlex.quote(Path(path).stem + '_ordered.tif')}")
        pixel = ground_pixel(dataset, reader.aligned.assumed) if spec.ground_pixel else None
        if pixel is not None and pixel > COARSER * spec.ground_pixel:
            lines.append(f"{path}: its pixels are about {pixel:.3g} m on the ground, {pixel / spec.ground_pixel:.1f} times those of the "
                         f"{spec.name} raster the model was trained on ({spec.ground_pixel:.3g} m); read onto the map's finer grid they "
                         f"hold less detail than the model learned from: expect a weaker map from {spec.name}")
    return lines


def model_input_warnings(data: np.ndarray, valid: np.ndarray, reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """What is unlike the rasters the model was trained on about the inputs of ``reader`` (``data`` raw as it read them,
    ``valid`` per modality): :func:`scale_warnings`, :func:`unit_warnings`, :func:`partial_bands`, :func:`dead_bands` and
    :func:`raster_warnings`."""
    return [*scale_warnings(data, valid, reader, paths), *unit_warnings(data, valid, reader, paths), *partial_bands(data, reader, paths),
            *dead_bands(data, valid, reader, paths), *raster_warnings(reader, paths)]


def input_warnings(reader: ModelReader, paths: dict[str, Path]) -> list[str]:
    """:func:`model_input_warnings` for the inputs of ``reader``, read raw at a few places of its grid."""
    grid = reader.aligned.grid
    reads = [reader.read(window, normalized=False) for window in sample_windows(grid.height, grid.width)]
    data = np.concatenate([d.reshape(d.shape[0], -1) for d, _ in reads], axis=1)
    valid = np.concatenate([v.reshape(v.shape[0], -1) for _, v in reads], axis=1)
    return model_input_warnings(data, valid, reader, paths)


def coarser_vrt(path: Path) -> str | None:
    """A warning when the raster at ``path`` is a mosaic or stack VRT (not a warped one) whose pixels are
    coarser than its finest source's in the same CRS (``gdalbuildvrt``'s default resolution is its
    sources' average, so a stack of 10 and 20 m bands is read at 13.3 m); ``None`` otherwise."""
    with open_raster(path) as src:
        if src.driver != "VRT":
            return None
        with open(path, errors="replace") as xml:
            if "VRTWarpedDataset" in xml.read(2000):  # the root element's subClass: gdalwarp -of VRT, coarser on purpose
                return None
        crs, own = src.crs, min(abs(src.res[0]), abs(src.res[1]))
        sources = [name for name in src.files[1:] if Path(name).is_file()]
    finest = []
    for name in sources[:MAX_SOURCES]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(name) as source:
                    if source.crs is not None and source.crs == crs:
                        finest.append(min(abs(source.res[0]), abs(source.res[1])))
        except RasterioError:
            continue  # reading it says why
    if not finest or own <= min(finest) * 1.01:
        return None
    return (f"{path}: a VRT of pixel {own:.4g} over sources as fine as {min(finest):.4g} (gdalbuildvrt's default resolution is the "
            f"sources' average), so its finest bands are read coarser than they are; if that is not meant, build it again with "
            f"-resolution highest")


def file_warnings(path: Path) -> list[str]:
    """What is odd about one input file by itself: a VRT coarser than its sources, an undeclared fill value, a colour table."""
    return [line for line in (coarser_vrt(path), undeclared_fill(path), colour_table(path)) if line]


def colour_table(path: Path) -> str | None:
    """A warning when a band of the raster at ``path`` is paletted (GDAL's colour interpretation): its values index a
    colour table, as in a rendered or colour-classified map, and are no measurements; ``None`` otherwise."""
    with open_raster(path) as src:
        paletted = [band + 1 for band, kind in enumerate(src.colorinterp) if kind == ColorInterp.palette]
    if not paletted:
        return None
    return (f"{path}: band {paletted[0]} holds indices into a colour table (a rendered map, or one classified into colours), not "
            "measured values, and is read as if they were; give the sensor's measured values (the raster the colours were made from)")


def undeclared_fill(path: Path) -> str | None:
    """A warning when the raster at ``path`` declares no nodata but holds a usual fill value at a
    corner or on at least 1 % of the pixels sampled at five places, or 0 in every band at two corners
    or more where no pixel sampled holds 0 in any band, or where the zeros only surround its data
    (:func:`zero_collar`): a reprojection's wedges of fill (a height model whose ground reads 0 between
    objects is left alone); ``None`` otherwise. Only its measurement bands count, where its alpha
    bands are opaque."""
    with open_raster(path) as src:
        if src.nodata is not None or any(MaskFlags.per_dataset in f and MaskFlags.alpha not in f for f in src.mask_flag_enums):
            return None  # declared, or masked by a mask band (alpha bands are read below)
        h, w = src.height, src.width
        reading = BandReading.stored(src, path)

        def measured(window: Window) -> np.ndarray:
            """The measurement bands' stored values in ``window``, where its alpha bands say it holds data: ``[bands, pixels]``."""
            raster = src.read(window=window).astype(np.float64)
            return raster[reading.measurements][:, reading.data_mask(raster)]

        try:
            corners = [measured(Window(c, r, 1, 1)) for r, c in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1))]
            inside = np.concatenate([measured(window) for window in sample_windows(h, w)], axis=1)
        except RasterioError:
            return None  # a damaged file: the read that needs it says so
        for value in FILL_VALUES:
            at_corner = any(c.size and np.isclose(c, value, rtol=1e-6).all() for c in corners)
            share = float(np.isclose(inside, value, rtol=1e-6).mean()) if inside.size else 0.0
            if at_corner or share >= 0.01:
                where = "at a corner" + (f" and on {100 * share:.0f} % of the pixels sampled" if share >= 0.01 else "") if at_corner \
                    else f"on {100 * share:.0f} % of the pixels sampled"
                return (f"{path}: holds {value:g} {where} but declares no nodata; if {value:g} marks missing data, declare it "
                        f"(gdal_edit.py -a_nodata {value:g} {shlex.quote(str(path))}), else it is read as a measurement")
        zero_corners = sum(bool(c.size) and bool((c == 0).all()) for c in corners)
        if zero_corners < 2 or not inside.size:
            return None
        untaken = not (inside == 0).any()  # 0 where the data take no 0
        try:
            collar = not untaken and zero_collar(src, reading)
        except RasterioError:
            return None
    if untaken or collar:
        where = "only around its data" if collar else "a value none of its pixels sampled inside takes"
        return (f"{path}: holds 0 in every band at {zero_corners} corners, {where}, but declares no nodata; if that is the fill a "
                "reprojection left (gdalwarp without -dstnodata), declare it "
                f"(gdal_edit.py -a_nodata 0 {shlex.quote(str(path))}), else it is read as a measurement")
    return None


def zero_collar(src, reading: BandReading) -> bool:
    """Whether the pixels of the open raster ``src`` that hold 0 in every measurement band (``reading``)
    only surround its data, seen at most :data:`COLLAR_VIEW` pixels a side: data in its first and last
    rows and columns (a reprojection's output spans its footprint's bounding box) and the data of every
    row and column one unbroken run, as in the turned footprint a reprojection fills around. A coast
    with the sea at 0, an object with ground at 0 all around it, or ground at 0 between buildings, is
    none. Not looked for in rasters over :data:`COLLAR_PIXELS` pixels without overviews (each block
    would be decompressed)."""
    if src.height * src.width > COLLAR_PIXELS and not src.overviews(1):
        return False
    step = max(1.0, max(src.height, src.width) / COLLAR_VIEW)
    shape = (max(1, round(src.height / step)), max(1, round(src.width / step)))
    data = np.ones(shape, bool)
    for band, opaque in zip(reading.alphas, reading.opaque.ravel()):  # transparent pixels hold no data
        data &= src.read(band + 1, out_shape=shape, resampling=Resampling.nearest) >= opaque
    zero = np.ones(shape, bool)
    for band in reading.measurements:  # band by band, in the raster's own type
        zero &= src.read(band + 1, out_shape=shape, resampling=Resampling.nearest) == 0
    data &= ~zero
    if not (data[0].any() and data[-1].any() and data[:, 0].any() and data[:, -1].any()):
        return False
    for lines in (data, data.T):
        for line in lines:
            held = np.flatnonzero(line)
            if held.size and held[-1] - held[0] + 1 != held.size:
                return False
    return bool(zero.any())
