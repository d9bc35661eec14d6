"""The Processing algorithm that scores one known model on test labels (``mamol-eval``): a raster slot per
modality of the model, test labels as a vector layer with a class field or as a label raster, and the
accuracy report, which opens when the run ends."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from .algorithms import DEVICES, ModelAlgorithm, bands, known_layer_file, sensor_slot_problem
from .area import named_vector_file


class EvaluateModel(ModelAlgorithm):
    """Score one model on test labels from any subset of its sensors; its id is the mapping id with ``evaluate_``."""

    FIELDS = {"-o": "the Accuracy report folder", "--labels": "the test labels", "--label-field": "the Class field",
              "--model": "the model file", "--device": "the Device"}

    report: Path | None = None  # the report.html a run wrote, shown when it ends

    def displayName(self) -> str:  # noqa: N802
        return f"Evaluate {self.model_name} on test labels (MaMOL)"

    def group(self) -> str:
        return "Evaluate a model"

    def groupId(self) -> str:  # noqa: N802
        return "evaluate"

    def shortHelpString(self) -> str:  # noqa: N802
        names = ", ".join(f"{m['name']} ({bands(m['bands'])})" for m in self.modalities)
        return (f"<p>Scores the MaMOL model <b>{self.model_name}</b> ({self.model_path}) on test labels: overall accuracy, "
                f"kappa and per-class accuracy, with a confusion matrix, in an accuracy report that opens when the run "
                f"ends.</p><p>Give a raster for any subset of its modalities ({names}); a modality not given counts as "
                f"missing on every test pixel, so the report shows how well the model maps from the sensors you have. "
                f"Test labels are a vector layer with a class field (names or codes, as in training) or a label raster "
                f"(0 = unlabelled) whose classes.json or codes follow the model's classes. Use labels that training did "
                f"not see.</p>")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_sensor_slots()
        self.addParameter(QgsProcessingParameterVectorLayer("TRUTH", "Test labels (points or polygons)", optional=True))
        self.addParameter(QgsProcessingParameterField("CLASS_FIELD", "Class field", parentLayerParameterName="TRUTH", optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("TRUTH_RASTER", "Test labels as a label raster", optional=True))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "REPORT", "Accuracy report folder (if skipped: next to the model file)", optional=True, createByDefault=False))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        problem = sensor_slot_problem(self, self.modalities, parameters, context)
        if problem is None and not parameters.get("TRUTH") and not parameters.get("TRUTH_RASTER"):
            problem = "Give test labels: a vector layer with a class field, or a label raster."
        if problem is None and parameters.get("TRUTH") and parameters.get("TRUTH_RASTER"):
            problem = "Give test labels once: a vector layer or a label raster, not both."
        if problem is None and parameters.get("TRUTH") and not parameters.get("CLASS_FIELD"):
            problem = "Choose the class field of the test labels."
        if problem is not None:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        made: dict[str, str] = {}
        args = ["--model", self.model_path, *self.sensor_args(parameters, context, made)[0]]
        if self.parameterAsVectorLayer(parameters, "TRUTH", context) is not None:
            labels, copied = named_vector_file(self, parameters, "TRUTH", context, feedback, "the test labels")
            made.update(copied)
            args += ["--labels", labels, "--label-field", self.parameterAsString(parameters, "CLASS_FIELD", context)]
        else:
            args += ["--labels", known_layer_file(self.parameterAsRasterLayer(parameters, "TRUTH_RASTER", context), made,
                                                  "the test labels")]
        folder = Path(self.parameterAsFileOutput(parameters, "REPORT", context)) if parameters.get("REPORT") \
            else Path(self.model_path).with_suffix(".eval")
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QgsProcessingException(f"{folder.parent}: cannot be created ({exc.strerror}); choose another report folder") from None
        args += ["-o", str(folder), "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]]
        self.run_mamol("mamol-eval", args, feedback, made)
        self.report = folder / "report.html"
        return {"REPORT": str(folder)}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802
        from qgis.utils import iface

        if iface is not None and self.report is not None:  # in the QGIS window (not qgis_process): show the report
            from .report import show_report

            self.report_dialog = show_report(self.report, iface.mainWindow())
        return {}
