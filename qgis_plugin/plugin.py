"""The plugin object QGIS loads: Processing provider, toolbar button and menu entries."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QFileDialog, QMessageBox

from . import settings
from .algorithms import ICON, algorithm_name
from .environment import describe_environment, find_tool
from .provider import MamolProvider

MENU = "&MaMOL"


class MamolPlugin:
    """Registers the provider (also for qgis_process) and, with a GUI, the button and menu entries."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: MamolProvider | None = None
        self.actions: list[QAction] = []
        self.toolbar_actions: list[QAction] = []

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        self.provider = MamolProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        window = self.iface.mainWindow()
        entries = [("Map land cover (MaMOL)…", self.open_map_dialog, True),
                   ("Train MaMOL model…", self.open_train_dialog, False),
                   ("Set mamol environment…", self.choose_environment, False)]
        for text, slot, on_toolbar in entries:
            action = QAction(QIcon(str(ICON)), text, window)
            action.triggered.connect(slot)
            if on_toolbar:
                self.iface.addToolBarIcon(action)
                self.toolbar_actions.append(action)
            self.iface.addPluginToRasterMenu(MENU, action)
            self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        for action in self.toolbar_actions:
            self.iface.removeToolBarIcon(action)
        self.actions.clear()
        self.toolbar_actions.clear()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def map_algorithm_id(self, model: str) -> str:
        """Register ``model`` and return the id of its mapping algorithm."""
        settings.remember_model(model)
        self.provider.refreshAlgorithms()
        return f"mamol:{algorithm_name(model)}"

    def open_map_dialog(self) -> None:
        """Ask for a model file, then open its mapping dialog (one layer choice per modality)."""
        last = QgsSettings().value("mamol/last_model", "", type=str)
        model, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), "Choose a MaMOL model", last, "MaMOL models (*.safetensors)")
        if not model:
            return
        QgsSettings().setValue("mamol/last_model", model)
        algorithm = self.map_algorithm_id(model)
        if QgsApplication.processingRegistry().algorithmById(algorithm) is None:
            QMessageBox.warning(self.iface.mainWindow(), "MaMOL", f"{Path(model).name} could not be read as a MaMOL model "
                                "(see the MaMOL tab of the log messages).")
            return
        import processing

        processing.execAlgorithmDialog(algorithm, {})

    def open_train_dialog(self) -> None:
        import processing

        processing.execAlgorithmDialog("mamol:train", {})

    def choose_environment(self) -> None:
        """Pick the mamol-map executable of the environment mamol is installed in."""
        current = describe_environment(settings.bin_dir())
        path, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), f"mamol-map executable (now: {current})",
                                              settings.bin_dir() or "", "mamol-map (mamol-map mamol-map.exe)")
        if path:
            settings.set_bin_dir(str(Path(path).parent))
            if find_tool("mamol-map", settings.bin_dir()) is None:
                QMessageBox.warning(self.iface.mainWindow(), "MaMOL", f"{path} is not an executable mamol-map.")
            self.provider.refreshAlgorithms()
