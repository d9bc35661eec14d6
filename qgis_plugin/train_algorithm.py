"""Processing algorithm: train a MaMOL model from raster layers and ground truth, save it with its
report in a lasting place, and show the report."""

from __future__ import annotations

import os
import re
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
    QgsProject,
)

from . import settings
from .algorithms import DEVICES, MamolAlgorithm, known_layer_file, raster_problem, report_results
from .area import named_vector_file
from .classes import class_table, raster_class_table, write_class_table

#: The standard sensor slots: parameter, modality name, label. Other sensors are named after their layers.
SENSOR_SLOTS = [("HSI", "hsi", "Hyperspectral raster (modality 'hsi')"),
                ("LIDAR", "lidar", "LiDAR raster, e.g. a DSM (modality 'lidar')"),
                ("SAR", "sar", "SAR raster (modality 'sar')")]
BACKBONES = ["auto", "minilm-l6", "clip-vit-b-16", "tiny"]
#: Band scalings (mamol-train --normalization): value, label.
SCALINGS = [("standard", "Mean and standard deviation (most sensors)"),
            ("quantile", "Quantiles (heavy-tailed bands: SAR backscatter, LiDAR intensity)")]
#: mamol-train's --min-steps default (the plugin does not import mamol, which runs in its own environment).
MIN_STEPS = 500


def modality_name(layer_name: str) -> str:
    """A modality name from a layer name: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", layer_name).strip("_") or "modality"


def default_model_path(folder: Path | None = None) -> Path:
    """A model file name not yet taken, in the project's folder (``mamol_models/``) or, for an unsaved
    project, in ``~/mamol_models``: a place QGIS does not clean up, unlike its temporary outputs."""
    home = QgsProject.instance().homePath()
    folder = folder or (Path(home) if home else Path.home()) / "mamol_models"
    count = 1
    while (folder / f"landcover_model_{count}.safetensors").exists():
        count += 1
    return folder / f"landcover_model_{count}.safetensors"


class TrainModel(MamolAlgorithm):
    """Train a MaMOL model from raster layers (one per sensor) and ground truth."""

    FIELDS = {"-o": "the Model file", "--labels": "the ground truth", "--report": "the Accuracy report folder",
              "--classes": "the class colours", "--state": "the training state", "--test-labels": "the test labels",
              "--label-field": "the Class field", "--missing": "the Missing modality", "--missing-rate": "the Missing rate",
              "--epochs": "Epochs", "--min-steps": "the least number of training steps (Advanced)", "--backbone": "the Backbone",
              "--normalization": "the Band scaling", "--rotation": "the row-texture option", "--device": "the Device",
              "--name": "the Model name"}

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
        return ("<p>Trains a MaMOL model that later maps land cover from any subset of its sensors.</p>"
                "<p>Put each sensor's raster in its slot (hyperspectral, LiDAR, SAR: the modality names the mapping "
                "dialog matches to layers later); other sensors are named after their layers. Rasters may differ in CRS, "
                "resolution and extent. Ground truth is a vector layer with a class field (codes or names) or a label "
                "raster (0 = unlabelled), not both; a categorized style of the class field, or a paletted (unique "
                "values) style of the label raster (the layer's, or a QML file), gives the classes' order, names and "
                "colours, else a classes.json beside the label raster does. The accuracy report scores the test labels "
                "when given (a vector layer's class field is the ground truth's), else 30% of the labelled features "
                "(whole polygons or patches), held out of training.</p><p>Training simulates missing sensors (missing rate, and which modality is "
                "missing or 'both'). Tick the rows option where vine, orchard or crop rows lie in directions your ground "
                "truth does not show (training then turns patches by any angle). Under Advanced, band scaling by quantiles "
                "suits sensors with a few extreme values (SAR backscatter, LiDAR intensity). The model is saved in the "
                "project's folder (mamol_models/) unless you choose another file; its accuracy report (report.html) is saved next to it and opens when training ends. A cancelled "
                "training goes on where it stopped when run again with the same inputs, settings and model file.</p>")

    def initAlgorithm(self, config=None):  # noqa: N802
        for key, _, label in SENSOR_SLOTS:
            self.addParameter(QgsProcessingParameterRasterLayer(key, label, optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUTS", "Other sensor rasters (each named after its layer)",
                                                               QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer("TRUTH", "Ground truth (points or polygons)", optional=True))
        self.addParameter(QgsProcessingParameterField("CLASS_FIELD", "Class field", parentLayerParameterName="TRUTH", optional=True))
        self.addParameter(QgsProcessingParameterFile("CLASS_STYLE", "Class colours and order (a QML style)", extension="qml",
                                                     optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("TRUTH_RASTER", "Ground truth as a label raster", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer("TEST_TRUTH", "Test labels (points or polygons, same class field)",
                                                            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("TEST_TRUTH_RASTER", "Test labels as a label raster", optional=True))
        self.addParameter(QgsProcessingParameterNumber("MISSING_RATE", "Missing rate", QgsProcessingParameterNumber.Double, 0.7,
                                                       minValue=0, maxValue=1))
        self.addParameter(QgsProcessingParameterString("MISSING", "Missing modality (both, subsets or a modality name)",
                                                       defaultValue="both"))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, 30, minValue=1))
        steps = QgsProcessingParameterNumber("MIN_STEPS", "At least this many training steps, whatever the epochs (a small ground "
                                             "truth needs more passes)", QgsProcessingParameterNumber.Integer, MIN_STEPS, minValue=0)
        steps.setFlags(steps.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(steps)
        self.addParameter(QgsProcessingParameterBoolean("ANY_ANGLE", "Learn row textures at any angle (vines, orchards, crops)",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterEnum("BACKBONE", "Backbone", options=BACKBONES, defaultValue=0))
        scaling = QgsProcessingParameterEnum("SCALING", "Band scaling", options=[label for _, label in SCALINGS], defaultValue=0)
        scaling.setFlags(scaling.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(scaling)
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterString("NAME", "Model name (default: the model file's name)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination("MODEL", "Model file", "MaMOL model (*.safetensors)",
                                                                defaultValue=str(default_model_path())))
        self.addParameter(QgsProcessingParameterFolderDestination("REPORT", "Accuracy report folder (if skipped: next to the model file)",
                                                                  optional=True, createByDefault=False))

    def sensors(self, parameters, context) -> list[tuple[str, object, str]]:
        """``(modality name, layer, where it was given)`` of every sensor given: the standard slots, then the others."""
        found = [(name, self.parameterAsRasterLayer(parameters, key, context), f"the {name} slot")
                 for key, name, _ in SENSOR_SLOTS if parameters.get(key)]
        found += [(modality_name(layer.name()), layer, "the other sensor rasters")
                  for layer in self.parameterAsLayerList(parameters, "INPUTS", context)]
        return [(name, layer, role) for name, layer, role in found if layer is not None]

    def checkParameterValues(self, parameters, context):  # noqa: N802
        sensors = self.sensors(parameters, context)
        if not sensors:
            return False, "Give at least one sensor raster (a slot, or other sensor rasters)."
        names = [name for name, _, _ in sensors]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            return False, (f"Two sensors would both be called {repeated[0]!r}: rename one layer, or use one slot per sensor.")
        if not parameters.get("TRUTH") and not parameters.get("TRUTH_RASTER"):
            return False, "Give ground truth: a vector layer with a class field, or a label raster."
        if parameters.get("TRUTH") and parameters.get("TRUTH_RASTER"):
            return False, "Give ground truth once: a vector layer or a label raster, not both."
        if parameters.get("TEST_TRUTH") and parameters.get("TEST_TRUTH_RASTER"):
            return False, "Give test labels once: a vector layer or a label raster, not both."
        if parameters.get("TEST_TRUTH") and not parameters.get("TRUTH"):
            return False, "Test labels as a vector layer are read by the ground truth's class field: give vector ground truth too."
        if parameters.get("TRUTH") and not parameters.get("CLASS_FIELD"):
            return False, "Choose the class field of the ground-truth layer."
        problems = [raster_problem(layer, role) for _, layer, role in sensors]
        if any(problems):
            return False, next(filter(None, problems))
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802
        """The class table from the ground truth's style, read where Processing prepares (the main thread when run
        from its dialog) rather than on its worker thread: a project layer's renderer, or a clone with a QML file."""
        truth = self.parameterAsVectorLayer(parameters, "TRUTH", context)
        style = self.parameterAsFile(parameters, "CLASS_STYLE", context) or None
        try:
            if truth is not None:
                field = self.parameterAsString(parameters, "CLASS_FIELD", context)
                self.classes = class_table(truth, field, style), f"the style of {field!r}"
            else:
                self.classes = raster_class_table(self.parameterAsRasterLayer(parameters, "TRUTH_RASTER", context), style), \
                    "the label raster's style"
        except QgsProcessingException as exc:  # raised by processAlgorithm, whose errors the caller sees (prepare's go to the log)
            self.classes = exc
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        args, made = [], {}
        for name, layer, role in self.sensors(parameters, context):
            args += ["--input", f"{name}={known_layer_file(layer, made, role)}"]
        if self.parameterAsVectorLayer(parameters, "TRUTH", context) is not None:
            labels, copied = named_vector_file(self, parameters, "TRUTH", context, feedback, "the ground truth")
            made.update(copied)
            args += ["--labels", labels, "--label-field", self.parameterAsString(parameters, "CLASS_FIELD", context)]
        else:
            truth_raster = self.parameterAsRasterLayer(parameters, "TRUTH_RASTER", context)
            args += ["--labels", known_layer_file(truth_raster, made, "the ground truth")]
        if isinstance(self.classes, QgsProcessingException):
            raise self.classes
        table, source = self.classes
        if table is not None:  # else mamol reads the classes.json beside a label raster, if there is one
            written = write_class_table(table, QgsProcessingUtils.generateTempFilename("classes.json"))
            for spelling in {written, os.path.normpath(written)}:  # messages name the style, not a temporary file the analyst never made
                made[spelling] = source
            args += ["--classes", written]
            feedback.pushInfo(f"classes from {source}: " + ", ".join(c["name"] for c in table.values()))
        test_raster = self.parameterAsRasterLayer(parameters, "TEST_TRUTH_RASTER", context)
        if self.parameterAsVectorLayer(parameters, "TEST_TRUTH", context) is not None:
            test_labels, copied = named_vector_file(self, parameters, "TEST_TRUTH", context, feedback, "the test labels")
            made.update(copied)
            args += ["--test-labels", test_labels]
        elif test_raster is not None:
            args += ["--test-labels", known_layer_file(test_raster, made, "the test labels")]
        model = Path(self.parameterAsFileOutput(parameters, "MODEL", context))
        if not model.suffix:
            model = model.with_suffix(".safetensors")  # a name typed without one (batch mode, qgis_process)
        elif model.suffix.lower() != ".safetensors":
            raise QgsProcessingException(f"Model file {model}: a MaMOL model is a .safetensors file; give it that extension")
        if model.exists() and model.parent.name == "mamol_models" and model.name.startswith("landcover_model_"):
            model = default_model_path(model.parent)  # the dialog's default, taken by an earlier run: the next free name
            feedback.pushInfo(f"{model.parent} already holds that model; saving this one as {model.name}")
        try:
            model.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QgsProcessingException(f"{model.parent}: cannot be created ({exc.strerror}); choose another model file") from None
        args += ["--missing-rate", str(self.parameterAsDouble(parameters, "MISSING_RATE", context)),
                 "--missing", self.parameterAsString(parameters, "MISSING", context),
                 "--epochs", str(self.parameterAsInt(parameters, "EPOCHS", context)),
                 "--min-steps", str(self.parameterAsInt(parameters, "MIN_STEPS", context)),
                 "--backbone", BACKBONES[self.parameterAsEnum(parameters, "BACKBONE", context)],
                 "--normalization", SCALINGS[self.parameterAsEnum(parameters, "SCALING", context)][0],
                 "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)], "-o", str(model)]
        if self.parameterAsBoolean(parameters, "ANY_ANGLE", context):
            args += ["--rotation", "any"]
        name = self.parameterAsString(parameters, "NAME", context).strip()
        if name:
            args += ["--name", name]
        report = (self.parameterAsFileOutput(parameters, "REPORT", context) if parameters.get("REPORT") else "") \
            or str(model.with_suffix(".report"))
        args += ["--report", report]
        args += ["--continue"]  # a run this dialog cancelled with the same inputs and settings goes on where it stopped
        state = model.with_name(f"{model.stem}.state.safetensors")
        before = state.stat().st_mtime_ns if state.exists() else None
        try:
            self.run_mamol("mamol-train", args, feedback, made)
        except QgsProcessingException:
            if feedback.isCanceled() and state.exists() and state.stat().st_mtime_ns != before:  # this run saved it
                raise QgsProcessingException(f"cancelled; the training so far is kept in {state}: run Train again with the same "
                                             "inputs, settings and model file to continue where it stopped") from None
            raise
        self.trained = str(model)
        if report_results(str(model), Path(report)) is None:  # no test pixels: what lies there (if anything) is another model's
            self.report = None
            feedback.pushInfo(f"model saved to {model}; no accuracy report (no test pixels to score)")
            return {"MODEL": str(model), "REPORT": None}
        self.report = Path(report) / "report.html"
        if Path(report).resolve() != model.with_suffix(".report").resolve():
            settings.remember_report(str(model), report)
        feedback.pushInfo(f"model saved to {model}; accuracy report: {self.report}")
        return {"MODEL": str(model), "REPORT": report}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        settings.remember_model(self.trained)
        if self.provider() is not None:
            self.provider().refreshAlgorithms()
        from qgis.utils import iface

        if iface is not None and self.report is not None:  # in the QGIS window (not qgis_process): show the report
            from .report import show_report

            self.report_dialog = show_report(self.report, iface.mainWindow())
        return {}
