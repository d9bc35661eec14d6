"""The set-up window: which mamol environment the plugin runs, whether it works (``mamol-map
--version``, then ``mamol-info --check``, which imports torch and the raster libraries), and
finding, choosing or creating one (a virtual environment installed with pip, its output shown,
cancellable). One creation runs at a time; closing the window while it runs cancels it."""

from __future__ import annotations

import os
import queue
import shlex
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
from .environment import (Canceled, CommandFailed, MamolNotFound, create_environment, default_environment, environment_check,
                          find_environments, find_tool, imports_in_process, in_process_mismatch, plugin_version, tool_version)

#: A mamol wheel shipped inside the plugin (scripts/build_plugin.py puts it there), installed by "Create".
WHEELS = Path(__file__).parent / "wheels"


#: Only one environment is created at a time (two windows must not install into one folder).
CREATING = threading.Lock()


def default_requirement() -> str:
    """What "Create" installs: the wheel shipped with the plugin, else the plugin's mamol release from
    the package index (another release would not suit the plugin)."""
    wheels = sorted(WHEELS.glob("mamol-*.whl"))
    return str(wheels[-1]) if wheels else f"mamol=={plugin_version()}"


def requirement_args(text: str) -> list[str]:
    """pip's arguments from the requirement field: a file path as one argument (it may hold spaces,
    as under "Application Support"), anything else split as a shell would."""
    text = text.strip()
    if Path(text).is_file():
        return [text]
    return shlex.split(text, posix=os.name != "nt")


def environment_status(bin_dir: str | None, deep: bool = True) -> tuple[bool, str]:
    """Whether the environment in ``bin_dir`` (or on PATH) runs, and a sentence saying so; ``deep``
    also imports its libraries (``mamol-info --check``, a few seconds). Without a ``mamol-map`` there,
    mamol runs inside QGIS's Python when it imports there (as the dialogs then do)."""
    if find_tool("mamol-map", bin_dir) is None and imports_in_process():
        mismatch = in_process_mismatch()
        if mismatch is not None:
            return False, f"Not working: {mismatch}."
        where = f"in {bin_dir}" if bin_dir else "on PATH"
        return True, f"Working: mamol {plugin_version()} runs inside QGIS's Python (no mamol-map {where})."
    try:
        text = environment_check(bin_dir) if deep else tool_version(bin_dir)
        return True, f"Working: {text} ({bin_dir or 'on PATH'})."
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
        check = QPushButton("Check")
        check.clicked.connect(lambda: self.refresh(deep=True))
        find.clicked.connect(self.find)
        choose.clicked.connect(self.choose)
        self.create_button.clicked.connect(self.create)
        self.requirement = QLineEdit(default_requirement(), self)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.cancel_button = QPushButton("Cancel creation")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.ActionRole)
        self.buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        for button in (check, find, choose):
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

    def refresh(self, deep: bool = False) -> bool:
        """Show whether the environment runs: ``mamol-map --version`` (instant), or with ``deep`` (the Check
        button, and after choosing or creating one) ``mamol-info --check``, which imports its libraries."""
        working, text = environment_status(settings.bin_dir(), deep)
        self.status.setText(text)
        return working

    def use(self, bin_dir: str) -> bool:
        settings.set_bin_dir(bin_dir)
        self.on_change()
        working = self.refresh(deep=True)
        self.log.appendPlainText(("Now using " if working else "Set, but it does not work: ") + bin_dir)
        return working

    def find(self) -> None:
        for folder in find_environments(settings.bin_dir()):
            if environment_status(folder, deep=False)[0]:
                self.use(folder)
                return
        self.log.appendPlainText("No working mamol environment was found (configured folder, MAMOL_BIN_DIR, "
                                 f"{default_environment()}, PATH); choose its mamol-map or create one.")

    def choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The mamol-map executable of the mamol environment", settings.bin_dir() or "",
                                              "mamol-map (mamol-map mamol-map.exe)")
        if path:
            self.use(str(Path(path).parent))

    def busy(self) -> bool:
        return self.worker is not None and self.worker.is_alive()

    def create(self) -> None:
        """Create the environment in a background thread; its output appears in the log."""
        try:
            requirement = requirement_args(self.requirement.text())
        except ValueError as exc:  # an unclosed quote, say
            self.log.appendPlainText(f"The package to install cannot be read ({exc}); correct it and create again.")
            return
        if not CREATING.acquire(blocking=False):
            self.log.appendPlainText("An environment is being created already (in another window); wait for it to finish.")
            return
        self.canceled = False
        self.create_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy

        def work() -> None:
            try:
                folder = create_environment(default_environment(), requirement, lambda line: self.lines.put(("line", line)),
                                            lambda: self.canceled)
                self.lines.put(("done", folder))
            except (CommandFailed, MamolNotFound, Canceled) as exc:
                self.lines.put(("failed", str(exc)))
            except Exception as exc:  # anything else still ends the wait, with what happened
                self.lines.put(("failed", f"{type(exc).__name__}: {exc}"))
            finally:
                CREATING.release()

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
            self.cancel_button.setEnabled(False)
            if kind == "done" and not self.canceled:
                self.use(str(value))
            else:
                self.log.appendPlainText(f"Not created: {value}")

    def cancel(self) -> None:
        if self.busy() and not self.canceled:
            self.canceled = True
            self.log.appendPlainText("cancelling the creation…")

    def reject(self) -> None:
        """Close (Close, Esc, the window's X); while an environment is being created, cancel it first."""
        if self.busy():
            self.cancel()
            self.log.appendPlainText("The window closes once the creation has stopped.")
            self.timer.timeout.connect(self.close_when_stopped)
            return
        super().reject()

    def close_when_stopped(self) -> None:
        if not self.busy() and self.lines.empty():
            self.timer.timeout.disconnect(self.close_when_stopped)
            super().reject()
