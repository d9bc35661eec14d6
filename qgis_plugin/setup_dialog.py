"""The set-up window: which mamol environment the plugin runs, whether it works (``mamol-map
--version``), and finding, choosing or creating one (a virtual environment installed with pip,
its output shown, cancellable)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable

from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from . import settings
from .environment import Canceled, CommandFailed, MamolNotFound, create_environment, default_environment, find_environments, tool_version

#: A mamol wheel shipped inside the plugin (scripts/build_plugin.py puts it there), installed by "Create".
WHEELS = Path(__file__).parent / "wheels"


def default_requirement() -> str:
    """What "Create" installs: the wheel shipped with the plugin, else mamol from the package index."""
    wheels = sorted(WHEELS.glob("mamol-*.whl"))
    return str(wheels[-1]) if wheels else "mamol"


def environment_status(bin_dir: str | None) -> tuple[bool, str]:
    """Whether the environment in ``bin_dir`` (or on PATH) runs, and a sentence saying so."""
    try:
        return True, f"Working: {tool_version(bin_dir)} ({bin_dir or 'on PATH'})."
    except (MamolNotFound, CommandFailed) as exc:
        return False, f"Not working: {exc}."


class SetupDialog(QDialog):
    """Shows the environment's state and finds, chooses or creates one; ``on_change`` runs when the setting changes."""

    def __init__(self, parent=None, on_change: Callable[[], None] | None = None) -> None:
        super().__init__(parent)
        self.on_change = on_change or (lambda: None)
        self.setWindowTitle("Set up the mamol environment")
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        find, choose, self.create_button = QPushButton("Find automatically"), QPushButton("Choose mamol-map…"), QPushButton("Create")
        find.clicked.connect(self.find)
        choose.clicked.connect(self.choose)
        self.create_button.clicked.connect(self.create)
        self.requirement = QLineEdit(default_requirement(), self)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Cancel | QDialogButtonBox.Close, self)
        self.buttons.button(QDialogButtonBox.Cancel).setEnabled(False)
        self.buttons.button(QDialogButtonBox.Cancel).clicked.connect(self.cancel)
        self.buttons.rejected.connect(self.close_if_idle)
        row = QHBoxLayout()
        for button in (find, choose):
            row.addWidget(button)
        create_row = QHBoxLayout()
        create_row.addWidget(QLabel(f"New environment in {default_environment()} with:"))
        create_row.addWidget(self.requirement)
        create_row.addWidget(self.create_button)
        layout = QVBoxLayout(self)
        for item in (self.status, row, create_row, self.log, self.progress, self.buttons):
            (layout.addLayout if isinstance(item, QHBoxLayout) else layout.addWidget)(item)
        self.resize(760, 420)
        self.worker: threading.Thread | None = None
        self.canceled = False
        self.lines: "queue.Queue[tuple[str, object]]" = queue.Queue()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.drain)
        self.refresh()

    def refresh(self) -> bool:
        working, text = environment_status(settings.bin_dir())
        self.status.setText(text)
        return working

    def use(self, bin_dir: str) -> bool:
        settings.set_bin_dir(bin_dir)
        self.on_change()
        working = self.refresh()
        self.log.appendPlainText(("Now using " if working else "Set, but it does not work: ") + bin_dir)
        return working

    def find(self) -> None:
        for folder in find_environments(settings.bin_dir()):
            if environment_status(folder)[0]:
                self.use(folder)
                return
        self.log.appendPlainText("No working mamol environment was found (configured folder, MAMOL_BIN_DIR, "
                                 f"{default_environment()}, PATH); choose its mamol-map or create one.")

    def choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The mamol-map executable of the mamol environment", settings.bin_dir() or "",
                                              "mamol-map (mamol-map mamol-map.exe)")
        if path:
            self.use(str(Path(path).parent))

    def create(self) -> None:
        """Create the environment in a background thread; its output appears in the log."""
        self.canceled = False
        self.create_button.setEnabled(False)
        self.buttons.button(QDialogButtonBox.Cancel).setEnabled(True)
        self.progress.setRange(0, 0)  # busy
        requirement = self.requirement.text().split()

        def work() -> None:
            try:
                folder = create_environment(default_environment(), requirement, lambda line: self.lines.put(("line", line)),
                                            lambda: self.canceled)
                self.lines.put(("done", folder))
            except (CommandFailed, MamolNotFound, Canceled) as exc:
                self.lines.put(("failed", str(exc)))

        self.worker = threading.Thread(target=work, daemon=True)
        self.worker.start()
        self.timer.start(100)

    def drain(self) -> None:
        while True:
            try:
                kind, value = self.lines.get_nowait()
            except queue.Empty:
                return
            if kind == "line":
                self.log.appendPlainText(str(value))
                continue
            self.timer.stop()
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if kind == "done" else 0)
            self.create_button.setEnabled(True)
            self.buttons.button(QDialogButtonBox.Cancel).setEnabled(False)
            if kind == "done":
                self.use(str(value))
            else:
                self.log.appendPlainText(f"Not created: {value}")

    def cancel(self) -> None:
        self.canceled = True
        self.log.appendPlainText("cancelling…")

    def close_if_idle(self) -> None:
        if self.worker is not None and self.worker.is_alive():
            self.cancel()
            return
        self.reject()
