"""The plugin object QGIS loads: Processing provider, toolbar button and menu entries."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QFileDialog, QMessageBox

from . import settings
from .algorithms import ICON, parameter_name
from .layers import matching_layers
from .environment import describe_environment
from .models_dialog import ModelsDialog
from .provider import MamolProvider
from .setup_dialog import SetupDialog

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
                   ("MaMOL models…", self.open_models_dialog, False),
                   ("Set up mamol environment…", self.open_setup_dialog, False)]
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

    def map_algorithm_id(self, model: str) -> str | None:
        """Register ``model`` and return the id of its mapping algorithm (``None`` when it cannot be read: then it
        is not remembered)."""
        if self.provider.problem(model) is not None:
            return None
        settings.remember_model(model)
        self.provider.refreshAlgorithms()
        algorithm_id = self.provider.mapping_ids().get(str(Path(model).resolve()))
        return f"mamol:{algorithm_id}" if algorithm_id else None

    def open_map_dialog(self) -> None:
        """Ask for a model file, then open its mapping dialog (one layer choice per modality)."""
        if not self.environment_ready():
            return
        last = QgsSettings().value("mamol/last_model", "", type=str)
        model, _ = QFileDialog.getOpenFileName(self.iface.mainWindow(), "Choose a MaMOL model", last, "MaMOL models (*.safetensors)")
        if not model:
            return
        QgsSettings().setValue("mamol/last_model", model)
        algorithm = self.map_algorithm_id(model)
        if algorithm is None or QgsApplication.processingRegistry().algorithmById(algorithm) is None:
            reason = self.provider.problem(model) or "see the MaMOL tab of the log messages"
            QMessageBox.warning(self.iface.mainWindow(), "MaMOL", f"{Path(model).name} could not be read as a MaMOL model: {reason}")
            return
        import processing

        processing.execAlgorithmDialog(algorithm, self.initial_layers(algorithm))

    @staticmethod
    def initial_layers(algorithm_id: str) -> dict:
        """The dialog's sensor slots filled with the project's layers named like the model's modalities."""
        algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
        modalities = [m["name"] for m in algorithm.modalities]
        return {parameter_name(name): layer.id() for name, layer in matching_layers(modalities).items()}

    def open_train_dialog(self) -> None:
        if not self.environment_ready():
            return
        import processing

        processing.execAlgorithmDialog("mamol:train", {})

    def open_models_dialog(self) -> ModelsDialog:
        """The models the plugin offers, with their sensors and mapping algorithm; add or remove."""
        self.models_dialog = ModelsDialog(self.provider.mapping_ids, self.provider.info, self.provider.problem,
                                          self.provider.refreshAlgorithms, self.iface.mainWindow())
        self.models_dialog.show()
        return self.models_dialog

    def open_setup_dialog(self) -> SetupDialog:
        """The set-up window (one of it): what environment is used, whether it works, find / choose / create one."""
        if getattr(self, "setup_dialog", None) is None:
            self.setup_dialog = SetupDialog(self.iface.mainWindow(), on_change=self.provider.refreshAlgorithms)
        else:
            self.setup_dialog.refresh()
        self.setup_dialog.show()
        self.setup_dialog.raise_()
        return self.setup_dialog

    def environment_ready(self) -> bool:
        """Whether mamol can run; if not, say so and offer the set-up window (before any model is read)."""
        if describe_environment(settings.bin_dir()) != "not found":
            return True
        answer = QMessageBox.question(self.iface.mainWindow(), "MaMOL", "The mamol environment is not set up yet, so no model "
                                      "can be read or run. Set it up now (find, choose or create it)?")
        if answer == QMessageBox.Yes:
            self.open_setup_dialog()
        return False
