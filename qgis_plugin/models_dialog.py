"""The list of models the plugin offers: each one's name, file and sensors; add or remove entries
(removing forgets the model, its file stays)."""

from __future__ import annotations

from typing import Callable

from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QFileDialog, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout

from . import settings
from .algorithms import model_name


class ModelsDialog(QDialog):
    """Known models with their mapping algorithm; ``ids()`` gives model file -> algorithm id, ``info(path)``
    a model's configuration, ``on_change`` refreshes the provider."""

    def __init__(self, ids: Callable[[], dict[str, str]], info: Callable[[str], dict], on_change: Callable[[], None],
                 parent=None) -> None:
        super().__init__(parent)
        self.ids, self.info, self.on_change = ids, info, on_change
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
        for path, algorithm_id in self.ids().items():
            info = self.info(path)
            sensors = ", ".join(m["name"] for m in info["model"]["modalities"])
            self.tree.addTopLevelItem(QTreeWidgetItem([model_name(path, info), sensors, f"mamol:{algorithm_id}", path]))
        for column in range(3):
            self.tree.resizeColumnToContents(column)

    def add(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a MaMOL model", "", "MaMOL models (*.safetensors)")
        if path:
            settings.remember_model(path)
            self.on_change()
            self.fill()

    def remove(self) -> None:
        for item in self.tree.selectedItems():
            settings.forget_model(item.text(3))
        self.on_change()
        self.fill()
