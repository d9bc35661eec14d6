"""The MaMOL Processing provider: the training algorithm and one mapping algorithm per known model."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsMessageLog, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import settings
from .algorithms import ICON, MapLandCover, algorithm_name, model_name
from .evaluate_algorithm import EvaluateModel
from .environment import CommandFailed, MamolNotFound, model_info
from .train_algorithm import TrainModel


class MamolProvider(QgsProcessingProvider):
    """Provider ``mamol``: ``mamol:train`` and ``mamol:map_<model name>`` for every known model file."""

    def __init__(self) -> None:
        super().__init__()
        self._info_cache: dict[tuple[str, float], dict] = {}

    def id(self) -> str:
        return "mamol"

    def name(self) -> str:
        return "MaMOL"

    def longName(self) -> str:  # noqa: N802
        return "MaMOL land-cover mapping from any subset of sensors"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def info(self, model: str) -> dict:
        key = (model, Path(model).stat().st_mtime)
        if key not in self._info_cache:
            self._info_cache[key] = model_info(model, settings.bin_dir())
        return self._info_cache[key]

    def problem(self, model: str) -> str | None:
        """Why ``model`` cannot be offered (it cannot be read as a MaMOL model), or ``None`` when it can."""
        try:
            self.info(model)
        except (CommandFailed, MamolNotFound, OSError, KeyError, ValueError) as exc:
            return str(exc)
        return None

    def mapping_ids(self) -> dict[str, str]:
        """Model file -> id of its mapping algorithm (without ``mamol:``), for every known model that can
        be read; ids come from the models' names, in the order the models were added."""
        ids: dict[str, str] = {}
        for model in settings.known_models():
            try:
                ids[model] = algorithm_name(model_name(model, self.info(model)), set(ids.values()))
            except (CommandFailed, MamolNotFound, OSError, KeyError, ValueError) as exc:
                QgsMessageLog.logMessage(f"{model}: skipped ({exc})", "MaMOL", Qgis.Warning)
        return ids

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        """mamol-map writes GeoTIFFs, so the output pickers offer only .tif."""
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        """mamol-map writes polygons to a GeoPackage or GeoJSON, so the polygon picker offers only those."""
        return ["gpkg", "geojson"]

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(TrainModel())
        for model, algorithm_id in self.mapping_ids().items():
            self.addAlgorithm(MapLandCover(model, self.info(model), algorithm_id))
            self.addAlgorithm(EvaluateModel(model, self.info(model), "evaluate_" + algorithm_id[len("map_"):]))  # ids are map_NAME
