"""The list of models the plugin offers: each one's name, file and sensors; add or remove entries
(removing forgets the model, its file stays). A remembered file that can no longer be read as a model
(moved, damaged) is listed with the reason, so that it can be removed; one that cannot be read is not added."""

from __future__ import annotations

from typing import Callable

from qgis.PyQt.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QMessageBox, QPushButton, QTreeWidget, QTreeWidgetItem,
                                 QVBoxLayout)

from . import settings
from .algorithms import model_name


class ModelsDialog(QDialog):
    """Known models with their mapping algorithm; ``ids()`` gives model file -> algorithm id, ``info(path)``
    a model's configuration, ``problem(path)`` why a file cannot be read as a model (``None`` if it can),
    ``on_change`` refreshes the provider."""

    def __init__(self, ids: Callable[[], dict[str, str]], info: Callable[[str], dict], problem: Callable[[str], str | None],
                 on_change: Callable[[], None], parent=None) -> None:
        super().__init__(parent)
        self.ids, self.info, self.problem, self.on_change = ids, info, problem, on_change
        self.setWindowTitle("MaMOL models")
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["model", "sensors", "mapping algorithm", "file"])
        add, self.remove_button = QPushButton("Add…"), QPushButton("Remove from list")
        add.clicked.connect(self.add)
        self.remove_button.clicked.connect(self.remove)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.addButton(add, QDialogButtonBox.ActionRole)
        buttons.addButton(self.remove_button, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)
        layout.addWidget(buttons)
        self.resize(900, 360)
        self.fill()

    def fill(self) -> None:
        self.tree.clear()
        ids = self.ids()
        for path in settings.known_models():
            if path in ids:
                info = self.info(path)
                sensors = ", ".join(m["name"] for m in info["model"]["modalities"])
                self.tree.addTopLevelItem(QTreeWidgetItem([model_name(path, info), sensors, f"mamol:{ids[path]}", path]))
            else:
                reason = self.problem(path) or "not offered"
                self.tree.addTopLevelItem(QTreeWidgetItem(["(cannot be read)", reason, "", path]))
        for column in range(3):
            self.tree.resizeColumnToContents(column)

    def add(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a MaMOL model", "", "MaMOL models (*.safetensors)")
        reason = self.problem(path) if path else None
        if reason is not None:
            QMessageBox.warning(self, "MaMOL", f"{path} could not be read as a MaMOL model: {reason}")
        elif path:
            settings.remember_model(path)
            self.on_change()
            self.fill()

    def remove(self) -> None:
        for item in self.tree.selectedItems():
            settings.forget_model(item.text(3))
        self.on_change()
        self.fill()
