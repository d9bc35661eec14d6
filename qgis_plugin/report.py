"""The accuracy report mamol writes (``report.html``), shown in QGIS after training."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout


class ReportDialog(QDialog):
    """A window with the report page; its links open in the system browser."""

    def __init__(self, html: Path, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"MaMOL accuracy report — {html.parent.name}")
        self.browser = QTextBrowser(self)
        self.browser.setOpenExternalLinks(True)
        self.browser.setSource(QUrl.fromLocalFile(str(html)))
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(900, 700)


def show_report(html: Path, parent=None) -> ReportDialog | None:
    """Open the report ``html`` in a (non-modal) window; ``None`` when there is no such file."""
    if not Path(html).is_file():
        return None
    dialog = ReportDialog(Path(html), parent)
    dialog.show()
    return dialog
