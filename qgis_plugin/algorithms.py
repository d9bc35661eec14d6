"""Processing algorithms: map land cover with a MaMOL model, and train one."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import settings
from .environment import Canceled, CommandFailed, MamolNotFound, run_command

ICON = Path(__file__).parent / "icon.png"
DEVICES = ["auto", "cpu", "cuda"]
OPTIONAL_OUTPUTS = {"PROBABILITIES": ("probabilities", "Class probabilities (%)"),
                    "CONFIDENCE": ("confidence", "Confidence (%)"),
                    "AVAILABILITY": ("availability", "Modalities used (bit mask)")}
RESERVED = {"MODEL", "OUTPUT", "DEVICE", *OPTIONAL_OUTPUTS}


def algorithm_name(model_path: str) -> str:
    """A stable Processing id for a model file: its stem plus a short hash of its path."""
    stem = re.sub(r"[^a-z0-9]+", "_", Path(model_path).stem.lower()).strip("_") or "model"
    digest = hashlib.sha1(str(Path(model_path).resolve()).encode()).hexdigest()[:6]
    return f"map_{stem}_{digest}"


def bands(count: int) -> str:
    return f"{count} band" + ("" if count == 1 else "s")


def parameter_name(modality: str) -> str:
    return f"LAYER_{modality}" if modality.upper() in RESERVED else modality


def layer_file(layer, what: str) -> str:
    """The file behind a raster layer; layers that are not files (WMS, memory) are refused."""
    source = layer.dataProvider().dataSourceUri().split("|")[0]
    if not Path(source).is_file():
        raise QgsProcessingException(f"{what}: layer '{layer.name()}' is not a raster file ({source}); save it as a GeoTIFF first")
    return source


#: Post-processors must outlive the algorithm run that creates them.
_STYLERS: list = []


class StyleFromQml(QgsProcessingLayerPostProcessorInterface):
    """Applies the ``.qml`` that mamol-map writes beside the class raster (class colours and names)."""

    def __init__(self, qml: str) -> None:
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS API)
        if Path(self.qml).is_file():
            layer.loadNamedStyle(self.qml)
            layer.triggerRepaint()

    @classmethod
    def create(cls, qml: str) -> "StyleFromQml":
        styler = cls(qml)
        _STYLERS.append(styler)
        return styler


class MamolAlgorithm(QgsProcessingAlgorithm):
    """What both algorithms share: the icon, and running a mamol command with progress and cancel."""

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def run_mamol(self, tool: str, args: list[str], feedback) -> None:
        def on_progress(record: dict) -> None:
            feedback.setProgress(float(record.get("percent", 0)))
            eta = record.get("eta_s")
            feedback.setProgressText(f"{record.get('stage', tool)}: {record.get('done')}/{record.get('total')} {record.get('unit', '')}"
                                     + (f", about {eta:.0f} s left" if eta is not None else ""))

        feedback.pushCommandInfo(" ".join([tool, *args]))
        try:
            run_command(tool, args, settings.bin_dir(), on_progress, feedback.isCanceled, feedback.pushConsoleInfo)
        except (CommandFailed, MamolNotFound, Canceled) as exc:
            raise QgsProcessingException(str(exc)) from None


class MapLandCover(MamolAlgorithm):
    """Map land cover with one model: one optional raster input per modality the model knows."""

    def __init__(self, model_path: str, info: dict) -> None:
        super().__init__()
        self.model_path, self.info = model_path, info
        self.modalities = info["model"]["modalities"]

    def createInstance(self):  # noqa: N802
        return MapLandCover(self.model_path, self.info)

    def name(self) -> str:
        return algorithm_name(self.model_path)

    def displayName(self) -> str:  # noqa: N802
        return f"Map land cover with {Path(self.model_path).stem} (MaMOL)"

    def group(self) -> str:
        return "Map land cover"

    def groupId(self) -> str:  # noqa: N802
        return "map"

    def shortHelpString(self) -> str:  # noqa: N802
        names = ", ".join(f"{m['name']} ({bands(m['bands'])})" for m in self.modalities)
        classes = ", ".join(c["name"] for c in self.info["model"]["classes"])
        return (f"<p>Maps land cover with the MaMOL model <b>{Path(self.model_path).name}</b>.</p>"
                f"<p>Give a raster for any subset of its modalities: {names}. A modality that is not given, or "
                f"that does not cover part of the area, counts as missing there; the model adapts to whichever "
                f"sensors are present. Rasters may differ in CRS and resolution; they are aligned on the finest.</p>"
                f"<p>Classes: {classes}. The output is a uint8 GeoTIFF with the classes' colours and names; "
                f"optional outputs hold class probabilities, the winning probability and which modalities were used.</p>")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("MODEL", "MaMOL model file", extension="safetensors", defaultValue=self.model_path,
                                                     optional=True))
        for modality in self.modalities:
            self.addParameter(QgsProcessingParameterRasterLayer(parameter_name(modality["name"]),
                                                                f"{modality['name']} ({bands(modality['bands'])})", optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Land cover"))
        for key, (_, label) in OPTIONAL_OUTPUTS.items():
            self.addParameter(QgsProcessingParameterRasterDestination(key, label, optional=True, createByDefault=False))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        given = [m["name"] for m in self.modalities if parameters.get(parameter_name(m["name"]))]
        if not given:
            names = ", ".join(m["name"] for m in self.modalities)
            return False, f"Give a raster for at least one modality ({names})."
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        model = self.parameterAsFile(parameters, "MODEL", context) or self.model_path
        args = ["--model", model]
        for modality in self.modalities:
            layer = self.parameterAsRasterLayer(parameters, parameter_name(modality["name"]), context)
            if layer is not None:
                args += ["--input", f"{modality['name']}={layer_file(layer, modality['name'])}"]
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args += ["-o", output, "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        results = {"OUTPUT": output}
        for key, (option, _) in OPTIONAL_OUTPUTS.items():
            path = self.parameterAsOutputLayer(parameters, key, context) if parameters.get(key) else None
            if path:
                args += [f"--{option}", path]
                results[key] = path
        self.run_mamol("mamol-map", args, feedback)
        if context.willLoadLayerOnCompletion(output):
            details = context.layerToLoadOnCompletionDetails(output)
            details.name = "Land cover"
            details.setPostProcessor(StyleFromQml.create(str(Path(output).with_suffix(".qml"))))
        return results


class TrainModel(MamolAlgorithm):
    """Train a MaMOL model from raster layers (one per modality) and ground truth."""

    def createInstance(self):  # noqa: N802
        return TrainModel()

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802
        return "Train MaMOL model"

    def group(self) -> str:
        return "Train"

    def groupId(self) -> str:  # noqa: N802
        return "train"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("<p>Trains a MaMOL model. Each input raster is one modality, named after its layer; all must share one grid. "
                "Ground truth is a vector layer with a class field (codes or names) or a label raster (0 = unlabelled). "
                "Training simulates missing sensors (missing rate, and which modality is missing or 'both'), so the model "
                "later maps from any subset of its modalities. Without test labels, 30% of the labelled features are held "
                "out for the accuracy report.</p>")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUTS", "Modality rasters (one per sensor, same grid)", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterVectorLayer("TRUTH", "Ground truth (points or polygons)", optional=True))
        self.addParameter(QgsProcessingParameterField("CLASS_FIELD", "Class field", parentLayerParameterName="TRUTH", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("TRUTH_RASTER", "Ground truth as a label raster", optional=True))
        self.addParameter(QgsProcessingParameterNumber("MISSING_RATE", "Missing rate", QgsProcessingParameterNumber.Double, 0.7, minValue=0, maxValue=1))
        self.addParameter(QgsProcessingParameterString("MISSING", "Missing modality (both, subsets or a layer name)", defaultValue="both"))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, 30, minValue=1))
        self.addParameter(QgsProcessingParameterEnum("BACKBONE", "Backbone", options=["auto", "minilm-l6", "clip-vit-b-16", "tiny"], defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination("MODEL", "Model file", "MaMOL model (*.safetensors)"))
        self.addParameter(QgsProcessingParameterFolderDestination("REPORT", "Accuracy report folder", optional=True))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        if not parameters.get("TRUTH") and not parameters.get("TRUTH_RASTER"):
            return False, "Give ground truth: a vector layer with a class field, or a label raster."
        if parameters.get("TRUTH") and not parameters.get("CLASS_FIELD"):
            return False, "Choose the class field of the ground-truth layer."
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        args = []
        for layer in self.parameterAsLayerList(parameters, "INPUTS", context):
            name = re.sub(r"[^A-Za-z0-9_]+", "_", layer.name()).strip("_") or "modality"
            args += ["--input", f"{name}={layer_file(layer, name)}"]
        truth = self.parameterAsVectorLayer(parameters, "TRUTH", context)
        if truth is not None:
            args += ["--labels", truth.source().split("|")[0], "--label-field", self.parameterAsString(parameters, "CLASS_FIELD", context)]
        else:
            args += ["--labels", layer_file(self.parameterAsRasterLayer(parameters, "TRUTH_RASTER", context), "ground truth")]
        model = self.parameterAsFileOutput(parameters, "MODEL", context)
        args += ["--missing-rate", str(self.parameterAsDouble(parameters, "MISSING_RATE", context)),
                 "--missing", self.parameterAsString(parameters, "MISSING", context),
                 "--epochs", str(self.parameterAsInt(parameters, "EPOCHS", context)),
                 "--backbone", ["auto", "minilm-l6", "clip-vit-b-16", "tiny"][self.parameterAsEnum(parameters, "BACKBONE", context)],
                 "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)], "-o", model]
        report = self.parameterAsString(parameters, "REPORT", context)
        if report:
            args += ["--report", report]
        try:
            self.run_mamol("mamol-train", args, feedback)
        finally:  # a cancelled run leaves its training state, which this dialog cannot resume: remove it
            Path(model).with_name(f"{Path(model).stem}.state.safetensors").unlink(missing_ok=True)
        self.trained = model
        return {"MODEL": model, "REPORT": report or str(Path(model).with_suffix(".report"))}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        settings.remember_model(self.trained)
        if self.provider() is not None:
            self.provider().refreshAlgorithms()
        return {}
