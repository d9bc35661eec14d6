"""Map outputs: a tiled, compressed uint8 class GeoTIFF (or Cloud-Optimized GeoTIFF with overviews)
with colour table, category names (GDAL PAM sidecar) and nodata 0; a QGIS ``.qml`` style; optional probability, confidence and
availability rasters; a PNG quick-look. Everything is written under temporary names and renamed
only when the map is complete."""

from __future__ import annotations

import colorsys
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mamol_core.atomic import atomic_paths, record_finished
from mamol_core.config import ClassSpec
from mamol_core.data.rasters import Grid
from mamol_core.figures import glyphs_told

if TYPE_CHECKING:
    import geopandas
    import pandas

log = logging.getLogger(__name__)

#: Nodata of the class raster (class values are 1..255) and of the percent rasters.
CLASS_NODATA, PERCENT_NODATA = 0, 255

#: Dataset tag on every raster mamol-map writes (its value says which output), so that a scene
#: folder holding earlier maps does not offer them as sensors.
OUTPUT_TAG = "MAMOL_OUTPUT"


@dataclass
class OutputPaths:
    """Where each output goes; ``None`` for optional outputs that were not asked for."""

    classes: Path
    probabilities: Path | None = None
    confidence: Path | None = None
    availability: Path | None = None
    cog: bool = False  # Cloud-Optimized GeoTIFFs with overviews instead of tiled GeoTIFFs
    polygons: Path | None = None  # the class map as polygons (GeoPackage or GeoJSON)
    sieve: int = 0  # class patches smaller than this many pixels take their surroundings' class
    polygons_layer: str | None = None  # the polygons' layer name; None: the polygons file's name

    @property
    def polygon_layer(self) -> str:
        """The name of the polygons' layer: :attr:`polygons_layer`, else the polygons file's name without suffix."""
        return self.polygons_layer or (self.polygons.stem if self.polygons is not None else "")

    @property
    def style(self) -> Path:
        return self.classes.with_suffix(".qml")

    def side_styles(self) -> dict[str, Path]:
        """The QGIS style written beside each side output asked for (QGIS loads ``NAME.qml`` with ``NAME.tif``)."""
        return {name: path.with_suffix(".qml") for name in ("probabilities", "confidence", "availability")
                if (path := getattr(self, name)) is not None}

    @property
    def categories(self) -> Path:
        return self.classes.with_name(self.classes.name + ".aux.xml")

    @property
    def quicklook(self) -> Path:
        return self.classes.with_name(self.classes.stem + "_quicklook.png")

    def labelled(self) -> dict[str, Path]:
        """Every file the map writes, keyed by what it is (for messages)."""
        optional = {"--probabilities": self.probabilities, "--confidence": self.confidence, "--availability": self.availability,
                    "--polygons": self.polygons}
        return {"-o": self.classes, "the class names (.aux.xml)": self.categories, "the style (.qml)": self.style,
                "the quick-look (.png)": self.quicklook, **{k: v for k, v in optional.items() if v is not None},
                **{f"the --{name} style (.qml)": path for name, path in self.side_styles().items()}}

    def all(self) -> list[Path]:
        return list(self.labelled().values())


def is_map_output(path: Path) -> bool:
    """Whether ``path`` is a raster mamol-map wrote (it carries :data:`OUTPUT_TAG`)."""
    try:
        with rasterio.open(path) as src:
            return OUTPUT_TAG in src.tags()
    except RasterioError:
        return False  # unreadable: reading it as a modality reports the problem


def hex_rgba(color: str) -> tuple[int, int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16), 255


def qml_style(classes: list[ClassSpec]) -> str:
    """A QGIS paletted-renderer style with the classes' values, colours and names."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.value}" color="{c.color}" alpha="255" label={quoteattr(c.name)}/>' for c in classes
    )
    return _style(f"""    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>""", "land cover")


def percent_style(band: int, label: str) -> str:
    """A QGIS style for a percent band (0-100): a red-yellow-green colour ramp with a legend."""
    stops = [(0, "#d7191c"), (25, "#fdae61"), (50, "#ffffbf"), (75, "#a6d96a"), (100, "#1a9641")]
    items = "\n".join(f'          <item value="{v}" color="{c}" alpha="255" label="{v} %"/>' for v, c in stops)
    return _style(f"""    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" classificationMin="0"
                    classificationMax="100" nodataColor="">
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" minimumValue="0" maximumValue="100"
                         labelPrecision="0">
{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>""", label)


#: Colours of the first sensor combinations (ColorBrewer's Paired, reordered); more combinations than these
#: (four sensors and up) get colours of their own spread around the hue circle (:func:`distinct_colours`).
COMBINATION_COLOURS = ["#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f",
                       "#cab2d6", "#ffff99"]


def distinct_colours(count: int) -> list[str]:
    """``count`` different ``#rrggbb`` colours: :data:`COMBINATION_COLOURS` where they suffice, else hues a
    golden angle apart in three shades, so no two combinations of up to eight sensors share one."""
    if count <= len(COMBINATION_COLOURS):
        return COMBINATION_COLOURS[:count]
    colours = []
    for i in range(count):
        red, green, blue = colorsys.hsv_to_rgb((i * 0.6180339887) % 1, (0.9, 0.55, 0.75)[i % 3], (0.85, 0.95, 0.6)[i % 3])
        colours.append(f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}")
    return colours


def availability_style(modality_names: list[str], given: list[str] | None = None) -> str:
    """A QGIS paletted style for the availability bit mask: one colour and legend entry per sensor combination
    that can occur in a map from the sensors ``given`` (default: every one); a combination keeps its colour
    whichever sensors are given."""
    palette = distinct_colours(2 ** len(modality_names) - 1)
    entries = []
    for value in range(1, 2 ** len(modality_names)):
        used = [name for bit, name in enumerate(modality_names) if value >> bit & 1]
        if given is not None and not set(used) <= set(given):
            continue
        label = " + ".join(used) + (" (all)" if len(used) == len(modality_names) > 1 else " only" if len(modality_names) > 1 else "")
        entries.append(f'        <paletteEntry value="{value}" color="{palette[value - 1]}" alpha="255" '
                       f'label={quoteattr(label)}/>')
    return _style(f"""    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <colorPalette>
{chr(10).join(entries)}
      </colorPalette>
    </rasterrenderer>""", "sensors used")


def _style(renderer: str, title: str) -> str:
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="AllStyleCategories">
  <!-- {_escape(title)} -->
  <pipe>
{renderer}
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


def category_sidecar(classes: list[ClassSpec]) -> str:
    """GDAL PAM ``.aux.xml`` with band category names (index = pixel value; GeoTIFF has no slot of its own)."""
    names = [""] * (max(c.value for c in classes) + 1)
    for c in classes:
        names[c.value] = c.name
    items = "\n".join(f"      <Category>{_escape(n)}</Category>" for n in names)
    return f"""<PAMDataset>
  <PAMRasterBand band="1">
    <CategoryNames>
{items}
    </CategoryNames>
  </PAMRasterBand>
</PAMDataset>
"""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def geotiff_profile(grid: Grid, count: int, nodata: int) -> dict:
    block = 256 if min(grid.width, grid.height) >= 256 else 16 * max(1, min(grid.width, grid.height) // 16)
    return dict(driver="GTiff", width=grid.width, height=grid.height, count=count, dtype="uint8", crs=grid.crs,
                transform=grid.transform, nodata=nodata, tiled=True, blockxsize=block, blockysize=block,
                compress="deflate", predictor=2, BIGTIFF="IF_SAFER")


class MapWriter(contextlib.ExitStack):
    """Opens every output on a temporary name; :meth:`write` stores one block, :meth:`commit`
    finishes the side files and renames everything into place. Leaving the context without
    :meth:`commit` (an error, Ctrl-C) deletes all temporaries."""

    def __init__(self, paths: OutputPaths, grid: Grid, classes: list[ClassSpec], modality_names: list[str],
                 given: list[str] | None = None) -> None:
        super().__init__()
        self.given = given  # the sensors given (default: every one): the availability legend lists their combinations
        try:
            self._open_all(paths, grid, classes, modality_names)
        except BaseException:
            if not self.__exit__(*sys.exc_info()):  # as an error: the temporaries already made are deleted, none renamed
                raise

    def _open_all(self, paths: OutputPaths, grid: Grid, classes: list[ClassSpec], modality_names: list[str]) -> None:
        self.paths, self.grid, self.classes, self.modality_names = paths, grid, classes, modality_names
        self.temporaries = dict(zip(paths.all(), self.enter_context(atomic_paths(paths.all()))))
        self.classes_ds = self._open(paths.classes, 1, CLASS_NODATA, "classes")
        self.classes_ds.write_colormap(1, {c.value: hex_rgba(c.color) for c in classes})
        self.classes_ds.set_band_description(1, "land cover")
        self.probabilities_ds = self._open(paths.probabilities, len(classes), PERCENT_NODATA, "probabilities")
        if self.probabilities_ds is not None:
            for band, c in enumerate(classes, start=1):
                self.probabilities_ds.set_band_description(band, f"P({c.name}) %")
        self.confidence_ds = self._open(paths.confidence, 1, PERCENT_NODATA, "confidence")
        if self.confidence_ds is not None:
            self.confidence_ds.set_band_description(1, "confidence %")
        self.availability_ds = self._open(paths.availability, 1, 0, "availability")
        if self.availability_ds is not None:
            self.availability_ds.set_band_description(1, "sensors used (bit mask)")
            self.availability_ds.update_tags(1, **{f"bit_{i}": n for i, n in enumerate(modality_names)})

    def _open(self, path: Path | None, count: int, nodata: int, kind: str):
        if path is None:
            return None
        dataset = self.enter_context(rasterio.open(self.temporaries[path], "w", **geotiff_profile(self.grid, count, nodata)))
        dataset.update_tags(**{OUTPUT_TAG: kind})
        return dataset

    def write(self, window: Window, block: dict[str, np.ndarray]) -> None:
        """Store one block encoded by :func:`encode_block`."""
        for name, dataset in (("classes", self.classes_ds), ("probabilities", self.probabilities_ds),
                              ("confidence", self.confidence_ds), ("availability", self.availability_ds)):
            if dataset is not None:
                array = block[name]
                dataset.write(array if array.ndim == 3 else array[None], window=window)

    def commit(self) -> None:
        """Close the rasters (converted to Cloud-Optimized GeoTIFFs with overviews when asked), write
        the style, category names and quick-look, then rename all."""
        for dataset in (self.classes_ds, self.probabilities_ds, self.confidence_ds, self.availability_ds):
            if dataset is not None:
                dataset.close()
        if self.paths.sieve > 1:
            sieve_classes(self.temporaries[self.paths.classes], self.paths.sieve)
        if self.paths.polygons is not None:
            write_polygons(self.temporaries[self.paths.classes], self.temporaries[self.paths.polygons], self.paths.polygons,
                           self.paths.polygon_layer, self.classes)
        if self.paths.cog:
            for path, resampling in ((self.paths.classes, "MODE"), (self.paths.probabilities, "AVERAGE"),
                                     (self.paths.confidence, "AVERAGE"), (self.paths.availability, "MODE")):
                if path is not None:
                    to_cog(self.temporaries[path], resampling)
        self.temporaries[self.paths.style].write_text(qml_style(self.classes))
        side = self.paths.side_styles()
        if "probabilities" in side:
            self.temporaries[side["probabilities"]].write_text(percent_style(1, f"P({self.classes[0].name}) %"))
        if "confidence" in side:
            self.temporaries[side["confidence"]].write_text(percent_style(1, "confidence %"))
        if "availability" in side:
            self.temporaries[side["availability"]].write_text(availability_style(self.modality_names, self.given))
        self.temporaries[self.paths.categories].write_text(category_sidecar(self.classes))
        write_quicklook(self.temporaries[self.paths.classes], self.temporaries[self.paths.quicklook], self.classes)
        polygons = self.paths.polygons
        if polygons is not None and (problem := polygon_target_problem(polygons, self.paths.polygon_layer)):
            aside = free_name(polygons)  # the file changed or was opened during the run: it stays as it is
            os.replace(self.temporaries[polygons], aside)
            record_finished(aside)
            log.warning("%s %s now; the polygons are in %s instead", polygons, problem, aside)
        self.close()


def encode_block(probabilities: np.ndarray, used: np.ndarray, values: np.ndarray, paths: OutputPaths) -> dict[str, np.ndarray]:
    """What the outputs store of one block, from ``probabilities`` ``[K, h, w]`` and ``used``
    ``[M, h, w]`` (bool): ``classes`` (class values, 0 where no sensor was usable), the outputs asked
    for in ``paths`` (``probabilities``, ``confidence`` in percent, ``availability`` bits) and
    ``used_count``, the pixels each modality was used on, and, for up to :data:`COUNTED_SENSORS` modalities,
    ``combination_count``, the pixels of each combination of them (by its availability code; code 0: none, no
    prediction). The availability raster holds :data:`AVAILABILITY_BITS` modalities."""
    predicted = used.any(0)
    codes = (used.astype(np.int64) << np.arange(len(used), dtype=np.int64)[:, None, None]).sum(0)
    block = {"classes": np.where(predicted, values[probabilities.argmax(0)], CLASS_NODATA).astype(np.uint8),
             "used_count": used.reshape(len(used), -1).sum(1).astype(np.int64)}
    if len(used) <= COUNTED_SENSORS:
        block["combination_count"] = np.bincount(codes.ravel(), minlength=2 ** len(used)).astype(np.int64)
    if paths.probabilities is not None or paths.confidence is not None:
        percent = np.rint(probabilities * 100).astype(np.uint8)
        if paths.probabilities is not None:
            block["probabilities"] = np.where(predicted[None], percent, PERCENT_NODATA).astype(np.uint8)
        if paths.confidence is not None:
            block["confidence"] = np.where(predicted, percent.max(0), PERCENT_NODATA).astype(np.uint8)
    if paths.availability is not None:
        block["availability"] = codes.astype(np.uint8)
    return block


#: Modalities the availability raster (one bit each, uint8) holds, and those whose combinations a map counts.
AVAILABILITY_BITS = 8
COUNTED_SENSORS = 16

#: Vector formats ``--polygons`` writes, by file suffix (single-file formats, so they can be written atomically).
POLYGON_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON"}


def sieve_classes(path: Path, size: int) -> None:
    """Give every patch of one class smaller than ``size`` pixels (4-connected, as the polygons are) the class around it,
    in the class GeoTIFF ``path`` (GDAL's sieve filter; the class map is held in memory, one byte per
    pixel). Pixels without a class (0) stay so and are not merged into."""
    from rasterio.features import sieve

    with rasterio.open(path, "r+") as dataset:
        classes = dataset.read(1)
        dataset.write(sieve(classes, size, mask=classes != CLASS_NODATA, connectivity=4)[None])


def square_metres(frame: geopandas.GeoDataFrame) -> pandas.Series:
    """Each polygon's area in square metres: measured flat in the frame's CRS where that is a Transverse
    Mercator (UTM and most national grids) or an equal-area projection in metres, so that it is the pixel
    count times the pixel area; otherwise (degrees, feet, Web Mercator, any other projection) in a Lambert
    azimuthal equal-area projection centred on the polygons, their edges first cut to a hundredth of the
    map's span so that they follow the Earth. A frame without a CRS keeps its grid's units."""
    crs = frame.crs
    flat = crs.sub_crs_list[0] if crs is not None and crs.is_compound else crs
    method = flat.coordinate_operation.method_name if flat is not None and flat.coordinate_operation is not None else ""
    if flat is None or (flat.is_projected and flat.axis_info[0].unit_name in ("metre", "meter")
                        and (method == "Transverse Mercator" or "Equal Area" in method or method == "Mollweide")):
        return frame.geometry.area
    if frame.empty:
        import pandas

        return pandas.Series([], index=frame.index, dtype=float)
    west, south, east, north = frame.total_bounds
    geometry = frame.geometry.segmentize(max(east - west, north - south) / 100)
    west, south, east, north = geometry.to_crs(4326).total_bounds
    centred = {"proj": "laea", "lat_0": (south + north) / 2, "lon_0": (west + east) / 2, "ellps": "WGS84", "units": "m"}
    return geometry.to_crs(centred).area


#: The description mamol-map gives its polygon layers in a GeoPackage (``gpkg_contents``): how a file of
#: its own earlier polygons, which a new map may replace, is told from one that holds anyone else's data.
POLYGONS_DESCRIPTION = "land-cover polygons written by mamol-map"
#: Table name prefixes a GeoPackage reserves (GeoPackage's, SQLite's and the spatial index's own tables).
RESERVED_TABLE_PREFIXES = ("gpkg", "sqlite_", "rtree_")


def polygon_target_problem(path: Path, layer: str) -> str:
    """Why the polygons (layer ``layer``) may not replace the existing file ``path`` ("" where they may: no
    file, a GeoJSON file, as other outputs are replaced, or a GeoPackage that holds only a layer of that
    name of polygons an earlier mamol-map wrote and is open in no other program). Replacing renames a new
    file over it, which would lose any other layer, raster, style or project it holds, and damage it for a
    program that has it open (SQLite's ``-wal``, ``-shm`` or ``-journal`` files beside it)."""
    import sqlite3

    path = Path(path)
    if path.suffix.lower() != ".gpkg" or not path.exists():
        return ""
    beside = [name for end in ("-wal", "-shm", "-journal") if path.with_name(name := path.name + end).exists()]
    if beside:
        return f"is open in another program or was left half-written ({', '.join(beside)} beside it)"
    try:
        with contextlib.closing(sqlite3.connect(path)) as database:
            database.execute("PRAGMA query_only = ON")
            contents = database.execute("SELECT table_name, data_type, description FROM gpkg_contents").fetchall()
            tables = [str(row[0]) for row in database.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
    except sqlite3.Error as exc:
        return f"is no GeoPackage that can be read ({exc})"
    names = {str(row[0]) for row in contents}
    others = [t for t in tables if t not in names and not t.lower().startswith(RESERVED_TABLE_PREFIXES)]
    if len(contents) == 1 and contents[0][1] == "features" and contents[0][2] == POLYGONS_DESCRIPTION and not others:
        if str(contents[0][0]).casefold() == layer.casefold():
            return ""
        return f"holds an earlier map's polygons as the layer {contents[0][0]!r} (replaced only by a layer of that name)"
    held = [f"{row[0]} ({row[1]})" for row in contents] + others
    return f"holds data mamol-map did not write ({', '.join(held) or 'no layer'})"


def free_name(path: Path) -> Path:
    """``path`` with the first free ``_2``, ``_3``, … after its stem."""
    number = 2
    while (candidate := path.with_name(f"{path.stem}_{number}{path.suffix}")).exists():
        number += 1
    return candidate


def write_polygons(classes_tif: Path, temporary: Path, final: Path, layer: str, classes: list[ClassSpec]) -> None:
    """Write :func:`polygon_frame` of ``classes_tif`` to ``temporary`` in the format ``final``'s suffix
    names, as the layer ``layer`` (in a GeoPackage described as :data:`POLYGONS_DESCRIPTION`)."""
    frame = polygon_frame(classes_tif, classes)
    options = {"layer_options": {"DESCRIPTION": POLYGONS_DESCRIPTION}} if final.suffix.lower() == ".gpkg" else {}
    frame.to_file(temporary, driver=POLYGON_DRIVERS[final.suffix.lower()], layer=layer, **options)


def polygon_frame(classes_tif: Path, classes: list[ClassSpec]):
    """The class map ``classes_tif`` as polygons (one per 4-connected patch, a GeoDataFrame) with the class
    value, name and area in square metres (:func:`square_metres`); all are held in memory."""
    import geopandas
    from rasterio.features import shapes
    from shapely.geometry import shape

    names = {c.value: c.name for c in classes}
    with rasterio.open(classes_tif) as dataset:
        band = rasterio.band(dataset, 1)
        found = [(shape(geometry), int(value)) for geometry, value in shapes(band, mask=dataset.read_masks(1) > 0,
                                                                             transform=dataset.transform)]
        crs = dataset.crs
    frame = geopandas.GeoDataFrame({"class": [v for _, v in found], "name": [names.get(v, "") for _, v in found]},
                                   geometry=[g for g, _ in found], crs=crs)
    frame["area"] = square_metres(frame)
    return frame


def to_cog(path: Path, resampling: str) -> None:
    """Rewrite the GeoTIFF ``path`` in place as a Cloud-Optimized GeoTIFF (GDAL's COG driver) with
    internal overviews made with ``resampling`` (``MODE`` for classes, ``AVERAGE`` for percentages)."""
    from rasterio.shutil import copy

    converted = path.with_name(path.name + ".cog")
    try:
        copy(path, converted, driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE", PREDICTOR="YES", OVERVIEW_RESAMPLING=resampling,
             BIGTIFF="IF_SAFER")
        converted.replace(path)
    finally:
        converted.unlink(missing_ok=True)


def write_quicklook(classes_tif: Path, png: Path, classes: list[ClassSpec], max_side: int = 1024) -> None:
    """A PNG of the class map, decimated to at most ``max_side`` pixels, with a legend; pixels that are not
    square (2 x 3 m, say) are drawn at their shape, so the picture is not squashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    with rasterio.open(classes_tif) as src:
        scale = max(src.width, src.height) / max_side
        shape = (max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1))))
        array = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        stretch = abs(src.transform.e / src.transform.a) if src.transform.a and src.transform.e else 1.0
    lookup = np.zeros((256, 4))
    for c in classes:
        lookup[c.value] = np.array(hex_rgba(c.color)) / 255
    height, width = array.shape[0] * stretch, array.shape[1]  # drawn size, pixels of the picture, no side past the array's
    fit = max(array.shape) / max(height, width)
    height, width = height * fit, width * fit
    fig_height = max(height / 100, 0.22 * len(classes) + 0.4)
    fig = plt.figure(figsize=(width / 100 + 2.0, fig_height), dpi=100)
    ax = fig.add_axes([0.0, (1 - height / 100 / fig_height) / 2, width / 100 / fig.get_figwidth(), height / 100 / fig_height])
    ax.imshow(array, cmap=ListedColormap(lookup), vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    fig.legend(handles=[Patch(color=c.color, label=c.name) for c in classes], loc="center left", fontsize=8, frameon=False,
               bbox_to_anchor=(width / 100 / fig.get_figwidth() + 0.02, 0.5))
    with glyphs_told("the quick-look picture"):
        fig.savefig(png, format="png")
    plt.close(fig)
