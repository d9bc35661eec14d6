"""Processing algorithms: what both share, and mapping land cover with one MaMOL model."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import struct
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsDataSourceUri,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsRaster,
)
from qgis.PyQt.QtGui import QIcon

from . import settings
from .environment import Canceled, CommandFailed, MamolNotFound, command_line, environment_problem, run_command
from .area import extent_file, named_vector_file
from .layers import ResultLayer, RunGroup, style_polygons

ICON = Path(__file__).parent / "icon.png"
DEVICES = ["auto", "cpu", "cuda"]
OPTIONAL_OUTPUTS = {"CONFIDENCE": ("confidence", "Confidence (%)"),
                    "AVAILABILITY": ("availability", "Sensors used per pixel"),
                    "PROBABILITIES": ("probabilities", "Class probabilities (%)")}
#: Names of the result layers in the layer tree.
LAYER_NAMES = {"OUTPUT": "Land cover", "CONFIDENCE": "Confidence (%)", "AVAILABILITY": "Sensors used",
               "PROBABILITIES": "Class probabilities (%)", "POLYGONS": "Land cover polygons"}
RESERVED = {"OUTPUT", "DEVICE", "AOI", "EXTENT", "MASK", "SIEVE", "ESTIMATE", "POLYGONS", *OPTIONAL_OUTPUTS}


def model_name(model_path: str, info: dict) -> str:
    """What a model is called: the name given at training, else its file's name."""
    return info.get("model", {}).get("name") or Path(model_path).stem


def algorithm_name(name: str, taken: set[str] | frozenset = frozenset()) -> str:
    """The Processing id of a model's mapping algorithm, from the model's own name (so moving the file
    keeps saved models and scripts working); ``_2``, ``_3`` ... when another known model has that name."""
    base = "map_" + (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "model")
    candidate, count = base, 1
    while candidate in taken:
        count += 1
        candidate = f"{base}_{count}"
    return candidate


def model_results(model_path: str) -> dict:
    """The accuracy per sensor combination of the model's training report (in the folder the train dialog
    wrote it to, else ``<model>.report/metrics.json`` or ``<model>_report/``), keyed by mamol's pattern names
    (``complete``, ``missing hsi``); empty without one, or where the report records another model file's
    header (an earlier model written to the same path)."""
    folders = [settings.report_folder(model_path), Path(model_path).with_suffix(".report"),
               Path(model_path).with_name(f"{Path(model_path).stem}_report")]
    for folder in (Path(f) for f in folders if f):
        results = report_results(model_path, folder, strict=False)
        if results is not None:
            return results
    return {}


def report_results(model_path: str, folder: Path, strict: bool = True) -> dict | None:
    """The results of the report in ``folder`` if it scored the model file ``model_path`` (its context records
    the file's header digest; without ``strict``, a report of mamol 0.3.0, which records none, counts too);
    ``None`` for no report, or another model's."""
    import json

    try:
        report = json.loads((Path(folder) / "metrics.json").read_text())
        recorded = report["context"].get("model_header_sha256")
        if (recorded is None and not strict) or recorded == header_digest(model_path):
            return report["results"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        pass
    return None


def header_digest(model_path: str) -> str:
    """SHA-256 of a model file's safetensors header, as its reports record it (mamol_core.modelfile.header's
    rule, which the plugin cannot import: mamol may live in another Python than QGIS's)."""
    with open(model_path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return hashlib.sha256(handle.read(length)).hexdigest()


def pattern_of(given: list[str], modalities: list[str]) -> str:
    """mamol's name of the presence pattern where only ``given`` are present."""
    absent = [name for name in modalities if name not in given]
    return "complete" if not absent else "missing " + "+".join(absent)


def bands(count: int) -> str:
    return f"{count} band" + ("" if count == 1 else "s")


def measurement_band_count(layer) -> int:
    """A raster layer's bands less its alpha bands (masks, which mamol does not count as bands); all
    of them where every band is alpha, as mamol reads such a raster."""
    kept = sum(layer.dataProvider().colorInterpretation(band) != QgsRaster.AlphaBand for band in range(1, layer.bandCount() + 1))
    return kept or layer.bandCount()


def parameter_name(modality: str) -> str:
    return f"LAYER_{modality}" if modality.upper() in RESERVED else modality


#: Parts of the command-line tools' messages naming options the dialogs have no field for, and what they
#: become in QGIS (the layer's file needs a CRS; how much of a tile must hold data; the sensors given decide).
CLI_ONLY = {", or pass --assume-crs EPSG:XXXX": "", " (--assume-crs EPSG:XXXX)": " (Raster › Projections › Assign projection…)",
            "pass --assume-crs EPSG:XXXX (the CRS they are in)": "give their files the CRS they are in (Raster › Projections › "
            "Assign projection…)", "valid on less than --min-valid of every tile": "valid on too few pixels of every tile",
            "; --missing-rate and --missing set another protocol": "", ", pass --reference RASTER to choose the grid": "",
            ", or train on a finer grid (--reference)": ""}
#: Fewer test pixels than this in a sensor combination say little of how well the model maps from it: the help
#: panel marks them, as mamol-info does (``mamol_core.evaluation.reports_found.FEW_PIXELS``; the plugin may run
#: without mamol installed).
FEW_PIXELS = 100
#: Where GDAL options go in a GDAL dialog of QGIS.
EXTRA = "Advanced Parameters › Additional command-line parameters"
SAVE_AS_GEOTIFF = "save it as a GeoTIFF first (right-click the layer › Export › Save As…, format GeoTIFF) and give that"
#: GDAL's complex data types (QGIS's Qgis.DataType values): what single-look complex SAR is stored in.
COMPLEX_TYPES = {Qgis.CInt16, Qgis.CInt32, Qgis.CFloat32, Qgis.CFloat64}


def layer_name(layer, role: str | None) -> str:
    """A layer as a message names it: ``layer 'dsm'``, with the ``role`` it plays where there is one (``the lidar slot``)."""
    return f"layer '{layer.name()}'" + (f" in {role}" if role else "")


def container_file(source: str) -> str | None:
    """The file a GDAL subdataset name points into (``NETCDF:"x.nc":var``, ``HDF5:"x.h5"://grp/var``,
    ``HDF4_SDS:UNKNOWN:"x.hdf":0``, ``GPKG:/d/x.gpkg:table``), or ``None`` where it names no existing file."""
    found = re.search(r'"([^"]+)"', source) or re.match(r"^\w+:((?:[A-Za-z]:)?[^:]+):", source)
    return found.group(1) if found and Path(found.group(1)).is_file() else None


def layer_file(layer, role: str | None = None) -> str:
    """The file behind a raster layer; layers that are not files (a variable inside a netCDF or HDF
    file, a GeoPackage raster table, WMS, memory) are refused with how to make one."""
    source = layer.dataProvider().dataSourceUri().split("|")[0]
    if not Path(source).is_file():
        inside = container_file(source)
        if inside is not None:
            raise QgsProcessingException(f"The {layer_name(layer, role)} is a layer inside {inside}, which mamol cannot read by itself; "
                                         f"{SAVE_AS_GEOTIFF}")
        raise QgsProcessingException(f"The {layer_name(layer, role)} is not a raster file ({source}); {SAVE_AS_GEOTIFF}")
    own = layer.dataProvider().crs()
    if own.isValid() and layer.crs().isValid() and layer.crs() != own:  # set in Layer Properties: mamol reads the file's
        raise QgsProcessingException(f"The {layer_name(layer, role)} has the CRS {layer.crs().authid() or layer.crs().description()} "
                                     f"set in QGIS, but its file ({source}) says {own.authid() or own.description()}, which mamol "
                                     "reads; give the file the right one with Raster › Projections › Assign projection…, then use it")
    return source


def known_layer_file(layer, made: dict[str, str], role: str | None = None) -> str:
    """:func:`layer_file`, recorded in ``made`` so that mamol's messages about the file name the layer and its slot
    (every layer given that file, however its path is spelt), under the path as QGIS gives it and as the command
    writes it (backslashes on Windows)."""
    path = layer_file(layer, role)
    same_file = [known for known in made if same_path(known, path)]
    earlier = ""
    if same_file and made[same_file[0]].endswith(f" ({same_file[0]})"):  # another layer's name, not a file the plugin made
        earlier = made[same_file[0]][: -len(f" ({same_file[0]})")]
    names = f"{earlier} and {layer_name(layer, role)}" if earlier else layer_name(layer, role)
    for spelling in {path, os.path.normpath(path), *same_file}:
        made[spelling] = f"{names} ({spelling})"
    return path


def same_path(first: str, second: str) -> bool:
    """Whether two spellings name one file (``./``, ``//``, ``/`` against ``\\`` and, on Windows, case)."""
    return os.path.normcase(os.path.normpath(first)) == os.path.normcase(os.path.normpath(second))


def replace_paths(text: str, made: dict[str, str]) -> str:
    """``text`` with each path of ``made`` replaced by what the analyst knows it as, in one pass (so a
    replacement is not replaced again), the longest path first, and only where a whole path stands (not inside a longer one)."""
    if not made:
        return text
    pattern = "|".join(re.escape(path) for path in sorted(made, key=len, reverse=True))
    return re.sub(rf"(?<![\w.\-/\\])(?:{pattern})(?![\w\-/\\]|\.\w)", lambda m: made[m.group(0)], text)


def raster_problem(layer, role: str | None = None) -> str | None:
    """Why a sensor layer cannot be read, found before a run (``None`` where nothing is): complex values."""
    if any(layer.dataProvider().dataType(band) in COMPLEX_TYPES for band in range(1, layer.bandCount() + 1)):
        return (f"The {layer_name(layer, role)} holds complex values, such as single-look complex SAR: give its amplitude or intensity "
                "(Processing Toolbox › GDAL › Raster miscellaneous › Raster calculator, expression abs(A), type Float32"
                f"{', band by band' if layer.bandCount() > 1 else ''}).")
    return None


def sensor_slot_problem(algorithm: QgsProcessingAlgorithm, modalities: list[dict], parameters: dict, context) -> str | None:
    """What is wrong with the rasters given in a model's sensor slots (none given, complex values, another band count
    than the model's sensor), before a run; ``None`` where nothing is."""
    given = [m for m in modalities if parameters.get(parameter_name(m["name"]))]
    if not given:
        return f"Give a raster for at least one modality ({', '.join(m['name'] for m in modalities)})."
    for modality in given:
        layer = algorithm.parameterAsRasterLayer(parameters, parameter_name(modality["name"]), context)
        if layer is None:
            continue
        problem = raster_problem(layer, f"the {modality['name']} slot")
        if problem is not None:
            return problem
        count = measurement_band_count(layer) if modality.get("as_declared", False) else layer.bandCount()
        if modality["bands"] not in (count, layer.bandCount()):  # a band marked alpha by mistake: mamol says how to mark it
            alpha = " and an alpha band" if count < layer.bandCount() else ""
            separate = (" If its bands are separate layers, stack them first (Raster › Miscellaneous › Build virtual raster…, "
                        "'Place each input file into a separate band', resolution 'Highest') and give the result."
                        if count < modality["bands"] else "")
            return (f"The {modality['name']} slot holds {layer.name()!r}, {bands(count)}{alpha}, but the model's "
                    f"{modality['name']} has {bands(modality['bands'])}: give that sensor's raster.{separate}")
    return None


class MamolAlgorithm(QgsProcessingAlgorithm):
    """What both algorithms share: the icon, and running a mamol command with progress and cancel."""

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """Called by each algorithm after its own checks: the mamol environment must run and be this plugin's release."""
        problem = environment_problem(settings.bin_dir())
        if problem is not None:
            return False, problem
        return super().checkParameterValues(parameters, context)

    #: The command's options as the dialog names them, for its messages (``--input NAME``: the NAME slot).
    FIELDS: dict[str, str] = {}

    def in_qgis_words(self, text: str, made: dict[str, str] | None = None) -> str:
        """A mamol message as the analyst knows its parts: the options as the dialog names them (:attr:`FIELDS`),
        files in ``made`` (path -> what the analyst gave: a layer, or a temporary file the plugin made for one)
        as the analyst knows them, GDAL fixes by QGIS's menu, and settings without a field by what to do in QGIS."""
        path = r"""(?:'[^']*'(?:"'"'[^']*')*|[^\s')]+)"""  # a file in a GDAL command, quoted as shlex does (spaces, ', brackets)
        for option in sorted(CLI_ONLY, key=len, reverse=True):  # settings the dialog has no field for: what to do in QGIS
            text = text.replace(option, CLI_ONLY[option])
        text = re.sub(rf"gdal_edit\.py -a_srs EPSG:XXXX {path}", "Raster › Projections › Assign projection… (it sets the file's own CRS, "
                      "which mamol reads; a CRS set in the layer's properties is not)", text)
        text = re.sub(rf"gdalwarp -t_srs EPSG:XXXX(?: -rpc)? {path} warped\.tif", "Raster › Projections › Warp (reproject)…", text)
        text = re.sub(rf"gdal_edit\.py -a_nodata (\S+) {path}", r"Raster › Conversion › Translate (convert format)…, "
                      r"'Assign a specified nodata value to output bands' \1, then use the new raster", text)
        text = re.sub(rf"gdal_edit\.py -scale 1 -offset 0 {path}", "Raster › Conversion › Translate (convert format)…, "
                      f"{EXTRA} '-a_scale 1 -a_offset 0', then use the new raster", text)
        text = re.sub(rf"gdal_edit\.py -colorinterp_(\d+) undefined {path}", r"Raster › Conversion › Translate (convert format)…, "
                      rf"{EXTRA} '-colorinterp_\1 undefined', then use the new raster", text)
        text = re.sub(rf", then gdal_edit\.py -units {path} {path}\)", ")", text)  # the calculator's raster declares no unit
        text = re.sub(rf"declare that \(gdal_edit\.py -units ({path}) {path}\)",  # no QGIS menu sets a band's unit
                      r"declare that (gdal_edit.py -units \1 on its file, in the OSGeo4W Shell or a terminal)", text)
        text = re.sub(rf'gdal_calc\.py -A {path}( --allBands=A)? --calc="([^"]+)" --type=Float32 --outfile={path}',
                      lambda m: f"Processing Toolbox › GDAL › Raster miscellaneous › Raster calculator, expression {m.group(2)}, "
                      "type Float32" + (", band by band" if m.group(1) else ""), text)
        text = text.replace("build it again with -resolution highest", "build it again with Raster › Miscellaneous › Build virtual "
                            "raster…, resolution 'Highest'")
        text = text.replace("(gdalbuildvrt)", "(Raster › Miscellaneous › Build virtual raster…)")
        text = re.sub(rf"\(gdal_translate -b 1 {path} labels\.tif\)", "(Raster › Conversion › Translate (convert format)…, "
                      f"{EXTRA} '-b 1')", text)
        text = re.sub(rf"gdal_translate((?: -b \d+)+) {path} {path}", lambda m: "Raster › Conversion › Translate (convert format)…, "
                      f"{EXTRA} '{m.group(1).strip()}', then use the new raster", text)  # bands chosen or ordered
        text = re.sub(rf"ogr2ogr -a_srs EPSG:XXXX {path} {path}", "Processing Toolbox › Vector general › Assign projection, then use "
                      "the new layer", text)
        text = text.replace("(ogr2ogr -makevalid, or QGIS's Fix geometries)", "(Processing Toolbox › Vector geometry › Fix geometries)")
        text = text.replace("(mamol-eval)", "(Processing Toolbox › MaMOL › Evaluate a model)")
        text = re.sub(r"leave (\w+) out \(the map then comes", r"leave the \1 slot empty (the map then comes", text)
        text = replace_paths(text, made or {})  # after the GDAL commands, whose files the menus replace
        style = next((what for what in (made or {}).values() if what.startswith("the style of ")), None)
        if style is not None:  # the class table was written from a categorized style: the style is what to mend
            text = text.replace("are not in the class table; add them to classes.json",
                                f"have no category in {style}; add a category for each (Symbology › Classify)")
            text = text.replace("add them to classes.json", f"add a category for each to {style} (Symbology › Classify)")
        text = re.sub(r"(?<![\w-])--input (\w+)", r"the \1 layer", text)
        return re.sub(r"(?<![\w-])(-o|--[a-z-]+)(?![\w-])", lambda m: self.FIELDS.get(m.group(1), m.group(1)), text)

    def run_mamol(self, tool: str, args: list[str], feedback, made: dict[str, str] | None = None) -> None:
        """Run ``tool`` with ``args``, its progress and log in ``feedback``, its messages in the analyst's words
        (:meth:`in_qgis_words`, with ``made``)."""
        def on_progress(record: dict) -> None:
            feedback.setProgress(float(record.get("percent", 0)))
            eta = record.get("eta_s")
            unit = record.get("unit", "") + ("s" if record.get("unit") and record.get("total") != 1 else "")
            feedback.setProgressText(f"{record.get('stage', tool)}: {record.get('done')}/{record.get('total')} {unit}"
                                     + (f", about {eta:.0f} s left" if eta is not None else ""))

        def on_log(line: str) -> None:
            if line.startswith("warning: "):
                feedback.pushWarning(self.in_qgis_words(line[len("warning: "):], made))
            else:
                feedback.pushConsoleInfo(self.in_qgis_words(line, made))

        feedback.pushCommandInfo(command_line([tool, *args]))
        try:
            run_command(tool, args, settings.bin_dir(), on_progress, feedback.isCanceled, on_log)
        except (CommandFailed, MamolNotFound, Canceled) as exc:
            raise QgsProcessingException(self.in_qgis_words(str(exc), made)) from None


class ModelAlgorithm(MamolAlgorithm):
    """An algorithm of one known model (its file, its configuration ``info``), one optional raster slot per modality."""

    def __init__(self, model_path: str, info: dict, algorithm_id: str) -> None:
        super().__init__()
        self.model_path, self.info, self.algorithm_id = model_path, info, algorithm_id
        self.model_name = model_name(model_path, info)
        self.modalities = info["model"]["modalities"]

    def createInstance(self):  # noqa: N802
        return type(self)(self.model_path, self.info, self.algorithm_id)

    def name(self) -> str:
        return self.algorithm_id

    def add_sensor_slots(self) -> None:
        """One optional raster parameter per modality of the model, named after it."""
        for modality in self.modalities:
            self.addParameter(QgsProcessingParameterRasterLayer(parameter_name(modality["name"]),
                                                                f"{modality['name']} ({bands(modality['bands'])})", optional=True))

    def sensor_args(self, parameters, context, made: dict[str, str]) -> tuple[list[str], list[str]]:
        """``--input NAME=PATH`` for each slot given, and the names given (``made`` records how messages name the files)."""
        args, given = [], []
        for modality in self.modalities:
            layer = self.parameterAsRasterLayer(parameters, parameter_name(modality["name"]), context)
            if layer is not None:
                name = modality["name"]
                args += ["--input", f"{name}={known_layer_file(layer, made, f'the {name} slot')}"]
                given.append(name)
        return args, given


def polygon_destination(destination: str) -> tuple[str, str | None]:
    """The file and layer name of the polygons output: "Save to GeoPackage…" gives
    ``ogr:dbname='FILE' table="LAYER" (geom)``; a file path has no layer name (mamol names it after the file)."""
    if destination.startswith("ogr:"):
        uri = QgsDataSourceUri(destination[len("ogr:"):])
        return uri.database(), uri.table() or None
    return destination, None


def polygon_source(context, destination: str, file: str, layer: str) -> str:
    """The polygons' layer source (``FILE|layername=LAYER`` for a GeoPackage), now also the key under which
    ``context`` loads the layer that was asked for under ``destination``."""
    source = f"{file}|layername={layer}" if file.lower().endswith(".gpkg") else file
    if context.willLoadLayerOnCompletion(destination):
        layers = context.layersToLoadOnCompletion()
        layers[source] = layers.pop(destination)
        context.setLayersToLoadOnCompletion(layers)
    return source


class MapLandCover(ModelAlgorithm):
    """Map land cover with one model: one optional raster input per modality the model knows."""

    FIELDS = {"-o": "the Land cover output", "--confidence": "the Confidence output", "--availability": "the Sensors used output",
              "--probabilities": "the Class probabilities output", "--polygons": "the Land cover polygons output",
              "--polygons-layer": "the Land cover polygons output's layer name",
              "--aoi": "the area to map", "--mask": "the mask", "--model": "the model file", "--device": "the Device",
              "--sieve": "the Merge class patches setting", "--estimate": "the estimate-only option"}

    def displayName(self) -> str:  # noqa: N802
        return f"Map land cover with {self.model_name} (MaMOL)"

    def group(self) -> str:
        return "Map land cover"

    def groupId(self) -> str:  # noqa: N802
        return "map"

    def shortHelpString(self) -> str:  # noqa: N802
        names = ", ".join(f"{m['name']} ({bands(m['bands'])})" for m in self.modalities)
        classes = ", ".join(c["name"] for c in self.info["model"]["classes"])
        return (f"<p>Maps land cover with the MaMOL model <b>{self.model_name}</b> ({self.model_path}).</p>"
                f"<p>Give a raster for any subset of its modalities: {names}. Opened with <i>Map land cover (MaMOL)…</i> "
                f"(toolbar, Raster menu), the dialog fills in the layers named like a modality. A modality that is not given, or "
                f"that does not cover part of the area, "
                f"counts as missing there; the model adapts to whichever sensors are present. Rasters may differ in CRS "
                f"and resolution; the map is at the model's training pixel size.</p>"
                f"<p>Classes: {classes}. The results are loaded in one group: the class map with the classes' colours "
                f"and names, and, when asked for, the confidence and class probabilities as colour ramps and the sensors "
                f"used per pixel (shown hidden, below the map).</p>" + self.accuracy_table())

    def accuracy_table(self) -> str:
        """The training report's accuracy per sensor combination, as the help panel shows it beside the slots."""
        results = model_results(self.model_path)
        names = [m["name"] for m in self.modalities]
        rows = []
        for count in range(len(names), 0, -1):
            for given in itertools.combinations(names, count):
                summary = results.get(pattern_of(list(given), names))
                if summary and summary.get("oa") is not None:
                    samples = summary.get("samples")
                    pixels = "" if samples is None else f"{samples}{', too few to judge' if samples < FEW_PIXELS else ''}"
                    rows.append(f"<tr><td>{' + '.join(given)}</td><td align='right'>{summary['oa']:.2f} %</td>"
                                f"<td align='right'>{pixels}</td></tr>")
        if not rows:
            return ""
        return ("<p>Overall accuracy on the model's test pixels, by the sensors given:</p><table>"
                "<tr><th>sensors</th><th>OA</th><th>test pixels</th></tr>" + "".join(rows) + "</table>")

    def report_args(self) -> list[str]:
        """``--report FOLDER`` where the train dialog wrote this model's report away from the model (mamol-map finds
        one beside it itself), so that mamol-map warns of sensors the report shows it weak on."""
        folder = settings.report_folder(self.model_path)
        return ["--report", folder] if folder and report_results(self.model_path, Path(folder), strict=False) is not None else []

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_sensor_slots()
        self.addParameter(QgsProcessingParameterFeatureSource("AOI", "Map only inside these polygons",
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Map only inside this extent (e.g. the canvas)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("MASK", "Map only where this raster is nonzero", optional=True))
        self.addParameter(QgsProcessingParameterNumber("SIEVE", "Merge class patches smaller than (pixels; 0 = off)",
                                                       QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterBoolean("ESTIMATE", "Only estimate the run time (maps nothing)", defaultValue=False))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Land cover"))
        for key, (_, label) in OPTIONAL_OUTPUTS.items():
            self.addParameter(QgsProcessingParameterRasterDestination(key, label, optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination("POLYGONS", "Land cover polygons", QgsProcessing.TypeVectorPolygon,
                                                                  optional=True, createByDefault=False))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        problem = sensor_slot_problem(self, self.modalities, parameters, context)
        if problem is not None:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        area, made = self.area_args(parameters, context, feedback)
        inputs, given = self.sensor_args(parameters, context, made)
        args = ["--model", self.model_path, *inputs, *area, *self.report_args()]
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args += ["-o", output, "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        if self.parameterAsBoolean(parameters, "ESTIMATE", context):
            context.setLayersToLoadOnCompletion({})  # nothing is written
            self.run_mamol("mamol-map", [*args, "--estimate"], feedback, made)
            return {}
        results = {"OUTPUT": output}
        for key, (option, _) in OPTIONAL_OUTPUTS.items():
            path = self.parameterAsOutputLayer(parameters, key, context) if parameters.get(key) else None
            if path:
                args += [f"--{option}", path]
                results[key] = path
        polygons = self.parameterAsOutputLayer(parameters, "POLYGONS", context) if parameters.get("POLYGONS") else None
        if polygons:
            file, layer = polygon_destination(polygons)
            if Path(file).suffix.lower() not in (".gpkg", ".geojson"):
                raise QgsProcessingException(f"The Land cover polygons output ({file}): save it as a GeoPackage (.gpkg) or "
                                             "GeoJSON (.geojson)")
            layer = layer or Path(file).stem
            args += ["--polygons", file, "--polygons-layer", layer]
            results["POLYGONS"] = polygon_source(context, polygons, file, layer)
        sieve = self.parameterAsInt(parameters, "SIEVE", context)
        if sieve > 1:
            args += ["--sieve", str(sieve)]
        self.run_mamol("mamol-map", args, feedback, made)  # it warns of sensors the model's report shows it weak on
        run = RunGroup(f"{self.model_name} — {' + '.join(given)}")
        for order, key in enumerate(["POLYGONS", "OUTPUT", *OPTIONAL_OUTPUTS]):
            path = results.get(key)
            if path and context.willLoadLayerOnCompletion(path):
                details = context.layerToLoadOnCompletionDetails(path)
                style = (lambda layer: style_polygons(layer, self.info["model"]["classes"])) if key == "POLYGONS" else None
                details.setPostProcessor(ResultLayer.create(run, LAYER_NAMES[key], Path(path).with_suffix(".qml"), order,
                                                            visible=key in ("OUTPUT", "POLYGONS") and not (key == "OUTPUT" and polygons),
                                                            style=style))
        return results

    def area_args(self, parameters, context, feedback) -> tuple[list[str], dict[str, str]]:
        """``--aoi``/``--mask`` from the polygons (or their selected features), the extent and the mask raster
        given, and the files made for them (path -> what the analyst gave, for messages)."""
        args = []
        polygons, made = named_vector_file(self, parameters, "AOI", context, feedback, "the area to map")
        if polygons is not None:
            args += ["--aoi", polygons]
        if parameters.get("EXTENT"):
            if args:
                raise QgsProcessingException("Give the area to map as polygons or as an extent, not both.")
            extent = extent_file(self.parameterAsExtent(parameters, "EXTENT", context),
                                 self.parameterAsExtentCrs(parameters, "EXTENT", context), context)
            args += ["--aoi", extent]
            made[extent] = "the extent to map"
        mask = self.parameterAsRasterLayer(parameters, "MASK", context)
        if mask is not None:
            args += ["--mask", known_layer_file(mask, made, "the mask")]
        return args, made
