"""Ground truth: class tables, label rasters, vector points/polygons rasterised onto the scene grid,
and a grouped hold-out split when no test labels are given."""

from __future__ import annotations

import json
import logging
import re
import shlex
import unicodedata
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
from affine import Affine
from rasterio import features
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from scipy import ndimage

from mamol_core.config import ClassSpec, LabelsRecord, TrainSpec
from mamol_core.data.plausibility import is_fill_value
from mamol_core.data.rasters import Grid, gdal_reason, grid_of, open_raster, same_grid
from mamol_core.data.vectors import feature_layers, holds_features, read_features
from mamol_core.errors import MamolError
from mamol_core.mapping.crs import assign_crs_command, check_related, crs_name, horizontal

log = logging.getLogger(__name__)

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".img", ".jp2"}
PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1",
           "#000075", "#808080"]


def is_raster(path: Path) -> bool:
    """Whether a file's name says it is a raster (how a scene folder's sensors are found)."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def is_label_raster(path: Path) -> bool:
    """Whether a labels file is a raster: by its name, else, unless it holds a layer of features GDAL
    reads (GeoPackage, shapefile, GeoJSON...), by GDAL opening it as one (ENVI or ASCII grid class maps,
    names without an extension, a raster GeoPackage)."""
    if is_raster(path):
        return True
    if not Path(path).is_file() or holds_features(path):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.count > 0
    except RasterioError:
        return False


class _RepeatedKey(Exception):
    """A JSON object that names one key twice (json keeps the last silently)."""


def _without_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:
        raise _RepeatedKey(repeated)
    return dict(pairs)


def load_class_table(path: Path) -> list[ClassSpec]:
    """Read ``classes.json`` (``{"1": {"name": ..., "color": "#rrggbb"}, ...}``)."""
    try:
        table = json.loads(Path(path).read_text(), object_pairs_hook=_without_repeated_keys)
        classes = [ClassSpec(int(k), str(v["name"]), str(v.get("color", PALETTE[i % len(PALETTE)])))
                   for i, (k, v) in enumerate(table.items())]
    except _RepeatedKey as exc:
        raise MamolError(f"{path}: the key {exc.args[0]!r} is given twice in one object; give each class, and each of its "
                         "fields, once") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MamolError(f"{path}: not a class table ({exc}); write {{\"1\": {{\"name\": \"Water\", \"color\": \"#0000ff\"}}, ...}}") from None
    bad = [c.value for c in classes if not 1 <= c.value <= 255]
    if bad:
        raise MamolError(f"{path}: class values {bad} are outside 1..255; renumber them (0 means unlabelled)")
    values, names = [c.value for c in classes], [class_name(c.name) for c in classes]  # "Grass" and "Grass " are one name
    if "" in names:
        raise MamolError(f"{path}: class {classes[names.index('')].value} has an empty name; give every class a name")
    twice = next((f"value {v}" for v in values if values.count(v) > 1), None) or \
        next((f"name {n!r}" for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise MamolError(f"{path}: the class {twice} is given twice; give each class one value and its own name")
    colours = [f"{c.value} ({c.color!r})" for c in classes if not c.has_hex_colour()]
    if colours:
        raise MamolError(f"{path}: the colour of class {', '.join(colours)} is not #rrggbb; write it as \"#1b7837\"")
    return sorted(classes, key=lambda c: c.value)


def default_classes(values: list[int]) -> list[ClassSpec]:
    """Class table for label values that came without one: ``class N`` and a fixed palette."""
    return [ClassSpec(int(v), f"class {v}", PALETTE[i % len(PALETTE)]) for i, v in enumerate(sorted(values))]


def names_classes(table: list[ClassSpec]) -> bool:
    """Whether ``table`` names its classes, not only numbers them as :func:`default_classes` does (``class 3``)."""
    return any(c.name != f"class {c.value}" for c in table)


def table_clash(own: list[ClassSpec], table: list[ClassSpec]) -> tuple[ClassSpec, str] | None:
    """The first class of ``own`` (a labels file's own table or names) whose code ``table`` names otherwise (names compared
    as :func:`class_name` and in any case; codes only one of them has do not count), with ``table``'s name; ``None``."""
    names = {c.value: c.name for c in table}
    return next(((c, names[c.value]) for c in own
                 if c.value in names and class_name(names[c.value]).casefold() != class_name(c.name).casefold()), None)


def check_same_table(labels: Path, beside: Path, table: list[ClassSpec], source: Path) -> None:
    """Stop when the class table ``beside`` the labels at ``labels`` (their ``classes.json``), where there is one and it
    is not ``source``, gives one of their codes another class name than the ``table`` read from ``source`` does
    (:func:`table_clash`): training would read the labels' codes by the wrong one."""
    if beside.is_file() and beside.resolve() != source.resolve() and (found := table_clash(load_class_table(beside), table)):
        clash, other = found
        raise MamolError(f"{beside}: calls code {clash.value} {clash.name!r}, where {source}, which training reads {labels}'s codes "
                         f"with, calls it {other!r}; give the table its codes follow (--classes {shlex.quote(str(beside))}) or make "
                         "the two alike")


def labels_record(path: Path, field: str | None) -> LabelsRecord:
    """What a model records of its labels file (read with the class ``field`` where it holds vector features): its name,
    the SHA-256 of its content (with a shapefile's ``.dbf`` of attributes) and, for vectors, the layer and field read."""
    import hashlib

    path = Path(path)
    raster = is_label_raster(path)
    digest = hashlib.sha256()
    for part in [path] + ([path.with_suffix(".dbf")] if path.suffix.lower() == ".shp" and path.with_suffix(".dbf").is_file() else []):
        with open(part, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    if raster:
        return LabelsRecord(path.name, digest.hexdigest())
    layer = label_layer(path, field)
    return LabelsRecord(path.name, digest.hexdigest(), layer, field, features_digest(path, layer, field))


def features_digest(path: Path, layer: str | None, field: str | None) -> str | None:
    """SHA-256 of a vector layer's features — each geometry (its parts normalised and sorted) with its value of
    ``field``, in an order of their own — so that a copy of them in another file or format (QGIS saves a
    GeoPackage layer, or a filtered one, for mamol) is known as the same labels; ``None`` where they cannot be read."""
    import hashlib

    import pyogrio
    import shapely

    try:
        _, _, wkb, values = pyogrio.raw.read(str(path), layer=layer, columns=[field] if field else [], force_2d=True)
        if wkb is None:  # a table without geometry: refused when it is read as labels
            return None
        column = values[0] if field and len(values) else [None] * len(wkb)
        features = []
        for geometry, value in zip(shapely.from_wkb(wkb), column):
            if geometry is None or geometry.is_empty:
                continue
            parts = sorted(shapely.to_wkb(shapely.normalize(part)) for part in shapely.get_parts(geometry))
            features.append(hashlib.sha256(str(value).encode() + b"|" + b"".join(parts)).digest())
    except Exception:  # curved geometries, say: a digest that cannot be taken only leaves the check to the file's
        return None
    return hashlib.sha256(b"".join(sorted(features))).hexdigest() if features else None


def embedded_classes(path: Path) -> list[ClassSpec] | None:
    """The class names a label raster carries itself, index = code: GDAL's category names in its ``.aux.xml`` (as
    mamol-map's maps and QGIS write them) or an ENVI Classification header's ``class names``; colours from its
    colour table where it has one. Code 0 (unlabelled) and unnamed codes are left out; ``None`` without names."""
    names = pam_category_names(path) or envi_class_names(path)
    if not names:
        return None
    try:
        with open_raster(path) as src:
            colours = src.colormap(1)
    except (ValueError, MamolError):  # no colour table
        colours = {}
    named = [(code, name) for code, name in enumerate(names) if code and name.strip()]
    return [ClassSpec(code, name.strip(), "#{:02x}{:02x}{:02x}".format(*colours[code][:3]) if code in colours
                      else PALETTE[i % len(PALETTE)]) for i, (code, name) in enumerate(named)] or None


def pam_category_names(path: Path) -> list[str]:
    """Band 1's category names in the GDAL ``.aux.xml`` beside ``path`` (index = value); ``[]`` without one."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(f"{path}.aux.xml").getroot()
    except (OSError, ElementTree.ParseError):
        return []
    band = next((b for b in root.iter("PAMRasterBand") if b.get("band", "1") == "1"), None)
    found = band.find("CategoryNames") if band is not None else None
    return [item.text or "" for item in found.iter("Category")] if found is not None else []


def envi_class_names(path: Path) -> list[str]:
    """The ``class names`` of the ENVI header of ``path`` (``name.hdr`` or ``name.ext.hdr``); ``[]`` without one."""
    for header in (Path(path).with_suffix(".hdr"), Path(f"{path}.hdr")):
        try:
            text = header.read_text(errors="replace")
        except OSError:
            continue
        found = re.search(r"^\s*class\s+names\s*=\s*\{([^}]*)\}", text, re.IGNORECASE | re.MULTILINE)
        if found:
            return [name.strip() for name in found.group(1).split(",")]
    return []


def check_label_values(labels: np.ndarray, classes: list[ClassSpec], path: Path,
                       fix: str = "add them to classes.json or relabel them as 0") -> None:
    """Stop when ``labels`` holds a value that is not in the class table (``fix`` says what to do)."""
    known = {c.value for c in classes} | {0}
    unknown = sorted(set(np.unique(labels).tolist()) - known)
    if unknown:
        raise MamolError(f"{path}: label values {unknown} are not in the class table; {fix}")


def class_name(text: str) -> str:
    """A class name as mamol compares it: without surrounding spaces, its accents composed (Unicode NFC),
    so that "Bâti" typed on one system matches "Bâti" stored decomposed by another."""
    return unicodedata.normalize("NFC", text.strip())


def class_by_name(classes: list[ClassSpec]) -> Callable[[str], int | None]:
    """The code of a class name in ``classes``: the same name (:func:`class_name`), else the name in another
    case (not where the table holds two names that differ only in case, such as "Grass" and "grass");
    ``None`` if neither."""
    exact = {class_name(c.name): c.value for c in classes}
    folded: dict[str, list[int]] = {}
    for c in classes:
        folded.setdefault(class_name(c.name).casefold(), []).append(c.value)

    def code_of(name: str) -> int | None:
        name = class_name(name)
        if name in exact:
            return exact[name]
        matches = folded.get(name.casefold(), [])
        return matches[0] if len(matches) == 1 else None

    return code_of


def unknown_names_message(names: list[str], classes: list[ClassSpec], table: str, fix: str, respell: str) -> str:
    """Why each of ``names`` (names :func:`class_by_name` found no code for) has none in ``classes``, called
    ``table``, with what to do: a name matching two or more of its names that differ only in case (which
    one is meant is not guessed) is to be spelt as one of them (``respell`` says where); the others are
    not in the table (``fix``, said of several; of one name, :func:`singular`)."""
    spellings = {n: [c.name for c in classes if class_name(c.name).casefold() == class_name(n).casefold()] for n in names}
    parts = [f"class name {n!r} matches {listing(spellings[n])} of {table} only in case; spell it as one of them {respell}"
             for n in names if len(spellings[n]) > 1]
    missing = [n for n in names if len(spellings[n]) < 2]
    if missing:
        plural = len(missing) > 1
        parts.append(f"class name{'s' if plural else ''} {listing(missing)} {'are' if plural else 'is'} not in {table} "
                     f"({', '.join(c.name for c in classes)}); {fix if plural else singular(fix)}")
    return "; ".join(parts)


def singular(fix: str) -> str:
    """A fix written of several classes (``them``, ``those classes``, ``such classes``) said of one."""
    return fix.replace("them", "it").replace("those classes", "that class").replace("such classes", "such a class")


def listing(names: list[str]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b' and 'c'``."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def recode_by_name(labels: np.ndarray, own: list[ClassSpec], model: list[ClassSpec], path: Path) -> np.ndarray:
    """Label codes of a raster described by its own class table ``own``, recoded to the codes the
    ``model`` gives the same class names (case-insensitive), so that "Grass" is scored as Grass
    whatever its code; stops on a labelled class the model does not know."""
    check_label_values(labels, own, path)
    code_of = class_by_name(model)
    present = set(np.unique(labels).tolist()) - {0}
    recoded = np.zeros_like(labels)
    for spec in own:
        if spec.value not in present:
            continue
        target = code_of(spec.name)
        if target is None:
            why = unknown_names_message([spec.name], model, "the model's classes", "relabel it as 0 or evaluate a model "
                                        "trained with that class", "in its classes.json")
            raise MamolError(f"{path}: class {spec.value} of its class table: {why}")
        recoded[labels == spec.value] = target
        if target != spec.value:
            log.info("%s: class %d %r is the model's class %d", path, spec.value, spec.name, target)
    return recoded


def _read_labels_on(src, path: Path, grid: Grid, on_grid: bool) -> np.ndarray:
    """Band 1 of the open label raster ``src`` on ``grid`` (warped by nearest neighbour unless it lies ``on_grid``)."""
    if on_grid:
        labels = src.read(1, window=Window(0, 0, grid.width, grid.height))
        if src.nodata is None:
            return labels
        return np.where(np.isnan(labels) if np.isnan(src.nodata) else labels == src.nodata, 0, labels)
    if src.crs is None:
        raise MamolError(f"{path}: has no CRS and another grid than the scene's ({grid.describe()}); assign its CRS "
                         "(gdal_edit.py -a_srs) or put it on the scene grid")
    if grid.crs is None:
        raise MamolError(f"{path}: lies in {src.crs} on another grid than the scene's rasters, which have no CRS to warp it to; "
                         "give them the one they are in (--assume-crs EPSG:XXXX) or put the labels on their grid")
    check_related(horizontal(src.crs), grid.crs, path, "the sensor rasters")
    with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                   resampling=Resampling.nearest, src_nodata=src.nodata, nodata=0) as view:
        return view.read(1)


def read_label_raster(path: Path, grid: Grid, classes: list[ClassSpec] | None = None) -> np.ndarray:
    """A label raster on the scene grid, as int32 (0 = unlabelled): read as it is when it lies on that
    grid (also where it or the scene's rasters lack a CRS but the origin, pixel size and size match),
    else warped onto it by nearest neighbour (any CRS, pixel size and extent). An undeclared 255 over
    most labels is warned about unless ``classes`` (the class table the codes follow) names it."""
    with open_raster(path) as src:
        if src.count != 1:  # an RGB rendering of a class map, say: its first band is no class code
            raise MamolError(f"{path}: a label raster holds one band of class codes, this one {src.count}; give its band of codes "
                             f"alone (gdal_translate -b 1 {shlex.quote(str(path))} labels.tif)")
        own = grid_of(src)
        on_grid = same_grid(own, grid) or ((own.crs is None or grid.crs is None) and same_grid(replace(own, crs=grid.crs), grid))
        if on_grid and own.crs != grid.crs:
            log.info("%s: %s; read on the scene grid, whose origin, pixel size and size it shares", path,
                     "has no CRS" if own.crs is None else f"lies in {crs_name(own.crs)}, where the scene's rasters have no CRS")
        nodata = src.nodata
        try:
            labels = _read_labels_on(src, path, grid, on_grid)
            if not on_grid:
                if not (labels > 0).any():
                    finer = own.crs == grid.crs and abs(src.transform.a * src.transform.e) < abs(grid.transform.a * grid.transform.e)
                    raise MamolError(f"{path}: no labelled pixel falls on the scene grid ({grid.describe()}); check its CRS and extent"
                                     + ("" if grid.crs is not None else " (the scene's rasters have no CRS: --assume-crs gives theirs)")
                                     + ("; its pixels are finer than the grid's, so labels smaller than a grid pixel fall between its "
                                        "pixel centres: label larger areas, or train on a finer grid (--reference)" if finer else ""))
                log.info("%s: warped onto the scene grid (nearest neighbour)", path)
                warn_of_labels_off_grid(src, path, labels, grid)
        except RasterioError as exc:
            raise MamolError(f"{path}: reading failed ({gdal_reason(exc)}); the file may be truncated, re-export it") from None
    if not np.issubdtype(labels.dtype, np.integer):
        if np.isnan(labels).any():
            if nodata is None:
                raise MamolError(f"{path}: label raster holds NaN where no nodata value says it is unlabelled; declare it "
                                 f"(gdal_edit.py -a_nodata nan {shlex.quote(str(path))}) or store 0 for unlabelled pixels")
            raise MamolError(f"{path}: label raster holds NaN besides its nodata value {nodata:g}; store 0 (or {nodata:g}) "
                             "for unlabelled pixels")
        if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            raise MamolError(f"{path}: label raster holds non-integer values; store class codes as integers (0 = unlabelled)")
    low, high = labels.min(), labels.max()  # in the stored type: float32's fill does not fit an integer
    if low < 0 or high > 255:
        fills = [float(value) for value in (low, high) if (value < 0 or value > 255) and is_fill_value(float(value))]
        fix = (f"; if {fills[0]:g} marks unlabelled pixels, declare it (gdal_edit.py -a_nodata {fills[0]:g} {shlex.quote(str(path))})"
               if nodata is None and fills else "")
        raise MamolError(f"{path}: label values must lie in 0..255 (0 = unlabelled); found {float(low):g}..{float(high):g}{fix}")
    labels = labels.astype(np.int64)
    fill = int((labels == 255).sum())
    if nodata is None and fill * 2 > (labels > 0).sum() and 255 not in {c.value for c in classes or []}:
        log.warning("%s: holds 255 on %d of its %d labelled pixels but declares no nodata, so 255 is read as a class; if it marks "
                    "unlabelled pixels, declare it (gdal_edit.py -a_nodata 255 %s)", path, fill, int((labels > 0).sum()),
                    shlex.quote(str(path)))
    return labels.astype(np.int32)


#: A label raster whose extent covers more than this many times the scene's is a wide map (a land-cover
#: tile) cut to the scene on purpose: its labels outside the scene are not warned about.
WIDE_LABELS = 4.0
#: Rows of a label raster counted at a time.
COUNT_ROWS = 1024


def warn_of_labels_off_grid(src, path: Path, labels: np.ndarray, grid: Grid) -> None:
    """Warn when a label raster warped onto the scene ``grid`` (as ``labels``) lost classes, or, in the
    grid's CRS, more than 1 % of its labelled area: they lie outside the scene or, finer than the
    grid, between its pixel centres (vector labels are warned about alike). Not for a raster far wider
    than the scene (:data:`WIDE_LABELS`); the source is counted :data:`COUNT_ROWS` rows at a time."""
    crs = horizontal(src.crs)
    # the two CRSs relate: the raster was just read onto the grid (_read_labels_on)
    left, bottom, right, top = transform_bounds(crs, grid.crs, *src.bounds) if crs != grid.crs else src.bounds
    if (right - left) * (top - bottom) > WIDE_LABELS * grid.width * grid.height * abs(grid.transform.a * grid.transform.e):
        return
    counts, nodata = np.zeros(256, np.int64), src.nodata
    s, g = src.transform, grid.transform
    finer = crs == grid.crs and s.b == s.d == g.b == g.d == 0 and abs(s.a * s.e) * 2 <= abs(g.a * g.e)
    inside = matched = 0  # labelled source pixels inside the grid, and those in grid pixels that took their class
    if finer:  # the grid column of each source column (-1 outside), the grid row of each source row: the grids are axis-aligned
        at_col = np.floor((s.c + (np.arange(src.width) + 0.5) * s.a - g.c) / g.a).astype(np.int64)
        at_col[(at_col < 0) | (at_col >= grid.width)] = -1
    for row in range(0, src.height, COUNT_ROWS):
        stored = src.read(1, window=Window(0, row, src.width, min(COUNT_ROWS, src.height - row)))
        code = (stored != 0) & np.isfinite(stored) & (stored >= 0) & (stored <= 255) & (stored == np.round(stored))
        if nodata is not None and not np.isnan(nodata):
            code &= stored != nodata
        counts += np.bincount(stored[code].astype(np.int64), minlength=256)
        if finer:
            at_row = np.floor((s.f + (np.arange(row, row + len(stored)) + 0.5) * s.e - g.f) / g.e).astype(np.int64)
            at_row[(at_row < 0) | (at_row >= grid.height)] = -1
            counted = code & (at_row >= 0)[:, None] & (at_col >= 0)[None, :]
            inside += int(counted.sum())
            matched += int((counted & (labels[np.ix_(np.maximum(at_row, 0), np.maximum(at_col, 0))] == stored)).sum())
    kept_counts = np.bincount(labels[(labels > 0) & (labels <= 255)].astype(np.int64), minlength=256)
    lost = [int(c) for c in np.flatnonzero(counts) if not kept_counts[c]]
    area = abs(src.transform.a * src.transform.e) * counts.sum()
    kept = abs(grid.transform.a * grid.transform.e) * kept_counts.sum()
    outside = 1 - kept / area if area and crs == grid.crs else 0.0
    if inside and matched < inside / 2:
        log.warning("%s: only %.0f %% of its labelled pixels lie in scene pixels that took their class: its pixels (%g x %g) are finer "
                    "than the scene's (%g x %g), a scene pixel takes the label at its centre, and labelled patches smaller than a scene "
                    "pixel are lost; give the labels as points or polygons (each labels the pixels it covers, a point the one it lies "
                    "in), or at the scene's pixel size", path, 100 * matched / inside, abs(s.a), abs(s.e), abs(g.a), abs(g.e))
    if lost or outside > 0.01:
        several = len(lost) > 1
        which = f" (all of class{'es' if several else ''} {', '.join(map(str, lost))}, so none of {'them' if several else 'it'} is used)"
        log.warning("%s: %s of its labelled area lies outside the scene or between its pixel centres%s; check its extent "
                    "against the rasters'", path, f"{outside:.0%}" if outside > 0.01 else "some", which if lost else "")


def label_layer(path: Path, field: str | None) -> str | None:
    """The layer of a vector file to read labels from: its only layer of features (``None`` for a file
    of one layer), else the one that has ``field``; a file of several where none or more than one
    has it is refused. Tables without geometry (a legend) are not counted."""
    import pyogrio

    found = feature_layers(path)
    if found is None or len(found) < 2:
        return found[0][0] if found else None
    layers = [name for name, _ in found]
    fields = {layer: [str(f) for f in pyogrio.read_info(path, layer=layer)["fields"]] for layer in layers}
    holding = [layer for layer in layers if field in fields[layer]]
    if len(holding) == 1:
        log.info("%s: reading its layer %r, the one of its %d layers with field %r", path, holding[0], len(layers), field)
        return holding[0]
    listed = "; ".join(f"{layer} ({', '.join(fields[layer]) or 'no fields'})" for layer in layers)
    if field is None:
        raise MamolError(f"{path}: needs --label-field; its layers and their fields are {listed}")
    if not holding:
        raise MamolError(f"{path}: none of its {len(layers)} layers has field {field!r}; its layers and their fields are {listed}")
    raise MamolError(f"{path}: its layers {', '.join(holding)} all have field {field!r}; export the one to use "
                     f"(ogr2ogr {shlex.quote(Path(path).stem + '_labels.gpkg')} {shlex.quote(str(path))} LAYER)")


def rasterize_vector(path: Path, field: str | None, grid: Grid, classes: list[ClassSpec] | None,
                     fix: str = "add them to classes.json", models: bool = False, codes_of: list[ClassSpec] | None = None,
                     beside: tuple[Path, Path] | None = None) -> tuple[np.ndarray, np.ndarray, list[ClassSpec]]:
    """Burn points/polygons into the scene grid.

    Returns labels (int32, 0 = unlabelled), the 1-based index of the feature each pixel came from
    (for grouped hold-out splits) and the class table. The class field may hold class codes or
    class names (names are matched to the table, case-insensitively, or numbered in sorted order without one). ``fix``
    says what to do about a class the table lacks; with ``models`` the table is a model's: codes are
    read as those of the labels' own table ``codes_of`` (beside them, else the scene's) and matched to the model's by name, as label
    rasters are, and without one read as the model's, with a warning (names are matched). In training, ``beside`` (the
    class table beside the labels, and the file ``classes`` came from): a field of codes is checked against it as a
    label raster is (:func:`check_same_table`).
    """
    frame = read_features(path, label_layer(path, field), " nor as a raster; pass a GeoPackage, shapefile or GeoJSON, or a label raster "
                          "GDAL reads")
    if frame.empty:
        raise MamolError(f"{path}: holds no features; draw or import the labelled points or polygons first")
    if field is None or field not in frame.columns:
        fields = [c for c in frame.columns if c != frame.geometry.name]
        what = "needs --label-field" if field is None else f"has no field {field!r}"
        raise MamolError(f"{path}: {what}; its fields are {', '.join(fields) or 'none'}")
    if frame.crs is None:
        raise MamolError(f"{path}: has no CRS; set one so it can be placed on the scene ({assign_crs_command(path, vector=True)})")
    if grid.crs is None:
        raise MamolError(f"the sensor rasters have no CRS, so {path} cannot be placed on them; give them the one they are in "
                         "(--assume-crs EPSG:XXXX)")
    check_related(frame.crs, grid.crs, path, "the sensor rasters", vector=True)
    frame = frame.to_crs(grid.crs)
    codes, classes = _class_codes(frame[field], classes, path, field, fix, models, codes_of, beside)
    shape = (grid.height, grid.width)
    shapes = list(zip(frame.geometry, codes))
    labels = features.rasterize(shapes, out_shape=shape, transform=grid.transform, fill=0, dtype="int32") if shapes else np.zeros(shape, np.int32)
    ids = features.rasterize(zip(frame.geometry, range(1, len(frame) + 1)), out_shape=shape, transform=grid.transform,
                             fill=0, dtype="int32") if shapes else np.zeros(shape, np.int32)
    if not labels.any():
        raise MamolError(f"{path}: no labelled feature falls inside the scene ({grid.describe()}); check the file's CRS and extent")
    hidden, skipped = unseen_features(ids, list(frame.geometry), grid)
    if hidden:
        log.warning("%s: %d of %d features lie on pixels that other features label (repeated features, or points closer than a "
                    "pixel), and count once there (or not at all where their classes differ)", path, hidden, len(frame))
    if skipped:
        log.warning("%s: %d of %d features lie outside the scene or cover no pixel centre, and were skipped", path, skipped, len(frame))
    outside = area_outside(frame.geometry[codes > 0], grid)  # features of code 0 are left out anyway
    if outside > 0.01:
        log.warning("%s: %.0f%% of its polygons' area lies outside the scene and is not used; check its extent against the rasters'",
                    path, 100 * outside)
    drop_conflicts(labels, ids, shapes, grid, classes, path)
    if not labels.any():
        raise MamolError(f"{path}: every labelled pixel lies under features of different classes; fix the overlaps")
    return labels, ids, classes


def area_outside(geometries, grid: Grid) -> float:
    """The share of the area of ``geometries`` (a GeoSeries in the grid's CRS, invalid polygons made valid;
    points and lines have none) that lies outside the grid's footprint."""
    import shapely

    shapes = shapely.make_valid(np.asarray(geometries.values, dtype=object))  # plain shapely: a ratio in degrees is as good, unwarned
    total = float(shapely.area(shapes).sum())
    if total <= 0:
        return 0.0
    corners = [grid.transform @ corner for corner in ((0, 0), (grid.width, 0), (grid.width, grid.height), (0, grid.height))]
    return 1 - float(shapely.area(shapely.intersection(shapes, shapely.Polygon(corners))).sum()) / total  # the footprint, turned or not


def unseen_features(ids: np.ndarray, geometries: list, grid: Grid) -> tuple[int, int]:
    """How many features the rasterized ``ids`` (feature ``i`` as ``i + 1``, later ones on top) do not
    show: those under other features' pixels, and those that cover no pixel centre of the grid. Each
    unseen feature is rasterized alone, over the pixels its bounds cover."""
    hidden = skipped = 0
    inverse = ~grid.transform
    for i in sorted(set(range(1, len(geometries) + 1)) - set(np.unique(ids[ids > 0]).tolist())):
        left, bottom, right, top = geometries[i - 1].bounds
        cols, rows = zip(*(inverse @ corner for corner in ((left, bottom), (left, top), (right, bottom), (right, top))))
        row0, col0 = max(int(np.floor(min(rows))) - 1, 0), max(int(np.floor(min(cols))) - 1, 0)
        row1, col1 = min(int(np.ceil(max(rows))) + 1, grid.height), min(int(np.ceil(max(cols))) + 1, grid.width)
        covers = row1 > row0 and col1 > col0 and features.rasterize(
            [(geometries[i - 1], 1)], out_shape=(row1 - row0, col1 - col0), fill=0, dtype="uint8",
            transform=grid.transform @ Affine.translation(col0, row0)).any()
        hidden += bool(covers)
        skipped += not covers
    return hidden, skipped


def drop_conflicts(labels: np.ndarray, ids: np.ndarray, shapes: list, grid: Grid, classes: list[ClassSpec], path: Path) -> None:
    """Unlabel, in place, the pixels that features of two or more classes cover (overlapping polygons,
    points of two classes in one pixel); warns with their count, classes and a place."""
    codes = sorted({int(code) for _, code in shapes})

    def coverage(code: int) -> np.ndarray:
        return features.rasterize([(geometry, 1) for geometry, c in shapes if c == code], out_shape=labels.shape,
                                  transform=grid.transform, fill=0, dtype="uint8")

    covered = np.zeros(labels.shape, np.uint8)
    for code in codes if len(codes) > 1 else []:
        np.minimum(covered + coverage(code), 2, out=covered)
    conflict = covered > 1
    if not conflict.any():
        return
    names = {c.value: c.name for c in classes}  # the classes are rasterized again rather than all held at once
    involved = [names.get(code, str(code)) for code in codes if coverage(code)[conflict].any()]
    row, col = (int(i[0]) for i in np.nonzero(conflict))
    x, y = grid.transform @ (col + 0.5, row + 0.5)
    log.warning("%s: %d pixels lie under features of different classes (%s; e.g. at %.6g, %.6g); they are left unlabelled, "
                "fix the overlaps to use them", path, int(conflict.sum()), ", ".join(involved), x, y)
    labels[conflict] = 0
    ids[conflict] = 0


def codes_in_text(values, classes: list[ClassSpec] | None):
    """The class codes a text field holds (every value a whole number from 0 to 255, as a shapefile or CSV
    may store them, also written "3.0" by a spreadsheet; "0" is unlabelled, as in a number field), as numbers;
    ``None`` when it holds names: a value outside that range (CORINE's "311"), only "0", or a class table
    that names every value (classes called "12", say)."""
    text = values.astype(str).str.strip()
    if not text.str.fullmatch(r"[0-9]{1,3}(\.0*)?").all():
        return None
    codes = text.astype(np.float64)
    if not codes.between(0, 255).all() or not codes.any():
        return None
    if classes:
        code_of = class_by_name(classes)
        if all(code_of(name) is not None for name in set(text)):
            return None
    return codes


def _class_codes(values, classes: list[ClassSpec] | None, path: Path, field: str, fix: str, models: bool,
                 codes_of: list[ClassSpec] | None = None, beside: tuple[Path, Path] | None = None) -> tuple[np.ndarray, list[ClassSpec]]:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        raise MamolError(f"{path}: field {field!r} is empty on {int(empty.sum())} of {len(values)} features; fill it or drop them")
    if is_bool_dtype(values):  # yes/no: two classes named as the field's values, not code 0 (unlabelled) and 1
        values = values.astype(str)
    codes_text = None if is_numeric_dtype(values) else codes_in_text(values, classes)
    if codes_text is not None:
        zeros = int((codes_text == 0).sum())
        if zeros:  # "0" could name a class: say what was done with it
            log.warning("%s: field %r holds whole numbers stored as text, read as class codes; %d of %d features hold \"0\", read as "
                        "unlabelled and left out (if \"0\" names a class, give a class table that names it)", path, field, zeros,
                        len(codes_text))
        else:
            log.info("%s: field %r holds whole numbers stored as text, read as class codes", path, field)
        values = codes_text
    if is_numeric_dtype(values):
        numbers = values.to_numpy().astype(np.float64)
        odd = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (numbers < 0) | (numbers > 255)
        if odd.any():
            shown = sorted({float(v) for v in numbers[odd]})[:5]
            raise MamolError(f"{path}: field {field!r} holds {', '.join(f'{v:g}' for v in shown)}; class codes are whole "
                             "numbers 1..255 (0 = unlabelled), or use a field of class names")
        codes = numbers.astype(np.int64)
        if (codes == 0).any() and codes_text is None:  # text said so above
            log.info("%s: %d of %d features hold code 0 in field %r (unlabelled) and are left out", path, int((codes == 0).sum()),
                     len(codes), field)
        if models and codes_of:
            log.info("%s: field %r holds class codes, read by the labels' class table and matched to the model's by name", path, field)
            return recode_by_name(codes, codes_of, classes, path), classes
        if beside is not None and classes:  # training: the table beside the labels must number the classes as the one read
            check_same_table(path, beside[0], classes, beside[1])
        table = classes or default_classes(sorted(set(codes.tolist()) - {0}))
        check_label_values(codes, table, path, fix)
        if models:
            log.warning("%s: field %r holds class codes, read as the model's (%s); a field of class names is matched by name",
                        path, field, ", ".join(f"{c.value}={c.name}" for c in table))
        return codes, table
    names = np.array([class_name(name) for name in values.astype(str)], dtype=object)
    if classes:
        code_of = class_by_name(classes)
        codes = {name: code_of(name) for name in set(names)}
        unknown = sorted(name for name, code in codes.items() if code is None)
        if unknown:
            raise MamolError(f"{path}: field {field!r}: {unknown_names_message(unknown, classes, 'the class table', fix, 'in the field')}")
        return np.array([codes[n] for n in names]), classes
    table = [ClassSpec(i + 1, n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(sorted(set(names)))]
    alike: dict[str, list[str]] = {}
    for c in table:
        alike.setdefault(c.name.casefold(), []).append(c.name)
    for spellings in (s for s in alike.values() if len(s) > 1):
        log.warning("%s: field %r holds %s, which differ only in case; they are trained as %d classes (spell them "
                    "alike if they are one)", path, field, listing(spellings), len(spellings))
    lookup = {c.name: c.value for c in table}
    return np.array([lookup[n] for n in names]), table


def grouped_holdout(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int,
                    classes: list[ClassSpec] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into train and test by whole groups (features, or connected patches of
    one class for rasters, 8-connected), so that neighbouring pixels of one field never sit on both sides.

    Per class with two or more groups, groups are visited in a seeded random order and held out
    while the class's held-out pixels stay within ``fraction``; when no group fits, the smallest is
    held out (at most half the class). One group of each class is always kept for training.
    ``classes`` names the classes in the warning about a class with a single group."""
    if groups is None:
        groups = np.zeros_like(labels, dtype=np.int64)
        offset = 0
        for value in np.unique(labels[labels > 0]):
            parts, count = ndimage.label(labels == value, structure=np.ones((3, 3), bool))
            groups[parts > 0] = parts[parts > 0] + offset
            offset += count
    rng = np.random.default_rng(seed)
    test_groups = []
    for value in np.unique(labels[labels > 0]):
        ids, sizes = np.unique(groups[(labels == value) & (groups > 0)], return_counts=True)
        if len(ids) < 2:
            name = next((repr(c.name) for c in classes or [] if c.value == value), str(value))
            log.warning("class %s has a single labelled group: it is used for training only", name)
            continue
        taken, held = np.zeros(len(ids), bool), 0
        for index in rng.permutation(len(ids)):
            if held + sizes[index] <= fraction * sizes.sum():
                taken[index], held = True, held + sizes[index]
        if not taken.any():
            taken[np.argmin(sizes)] = True
        if taken.all():
            taken[np.argmax(sizes)] = False
        test_groups.extend(ids[taken].tolist())
    is_test = np.isin(groups, test_groups) & (labels > 0)
    return np.where(is_test, 0, labels), np.where(is_test, labels, 0)


def block_holdout(labels: np.ndarray, fraction: float, block: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into train and validation by whole square blocks of ``block`` pixels,
    so that validation pixels lie in areas the training pixels do not reach into.

    Blocks are visited in a seeded random order; a block is held out while some class it holds
    has less than ``fraction`` of its pixels held out and no class would have more than half of
    its pixels held out (each class keeps at least half of its pixels for training)."""
    rows, cols = np.nonzero(labels)
    values = labels[rows, cols]
    classes = np.unique(values)
    per_class_total = np.array([(values == c).sum() for c in classes])
    block_of = (rows // block) * (labels.shape[1] // block + 1) + cols // block
    blocks, inverse = np.unique(block_of, return_inverse=True)
    counts = np.zeros((len(blocks), len(classes)), np.int64)
    np.add.at(counts, (inverse.reshape(-1), np.searchsorted(classes, values)), 1)
    held_counts = np.zeros(len(classes), np.int64)
    held = np.zeros(len(blocks), bool)
    for index in np.random.default_rng(seed).permutation(len(blocks)):
        inside = counts[index]
        wanted = (inside > 0) & (held_counts < fraction * per_class_total)
        if wanted.any() and np.all(held_counts + inside <= 0.5 * per_class_total):
            held[index] = True
            held_counts += inside
    is_held = np.zeros_like(labels, bool)
    is_held[rows, cols] = held[inverse.reshape(-1)]
    return np.where(is_held, 0, labels), np.where(is_held, labels, 0)


#: How a validation split holds out training labels: whole square blocks, or whole fields (the
#: connected patches of one class, so a held-out field has no training pixel at all).
VALIDATION_UNITS = ("blocks", "fields")


def validation_holdout(labels: np.ndarray, fraction: float, seed: int, unit: str = "blocks", block: int = TrainSpec.validation_block,
                       classes: list[ClassSpec] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training labels split into (train, validation) for choosing settings: :func:`block_holdout`
    with ``block``-pixel blocks, or :func:`grouped_holdout` over fields (at least one field of each
    class with two or more is held out, up to ``fraction`` of its pixels, or its smallest field when
    none fits; one is always kept; ``classes`` names them in its warning)."""
    if unit == "blocks":
        return block_holdout(labels, fraction, block, seed)
    if unit == "fields":
        return grouped_holdout(labels, None, fraction, seed, classes)
    raise MamolError(f"validation unit {unit!r}: use {' or '.join(VALIDATION_UNITS)}")
