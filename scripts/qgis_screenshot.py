"""Render the plugin's mapping dialog for the sample model headless and save it as a PNG
(docs/qgis_map_dialog.png by default). Needs Debian's python3-qgis; run with the mamol venv."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render_dialog(algorithm_id: str, path: Path, parameters: dict | None = None) -> None:
    """Open the Processing dialog of ``algorithm_id`` offscreen (with ``parameters`` filled in) and save a picture of it."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication

    dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(algorithm_id))
    if parameters:
        dialog.setParameters(parameters)
    dialog.resize(900, 620)
    dialog.show()
    for _ in range(5):
        QgsApplication.processEvents()
    if not dialog.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    dialog.close()


def main(out: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("MAMOL_BIN_DIR", str(Path(sys.executable).parent))
    sys.path += ["/usr/lib/python3/dist-packages", "/usr/share/qgis/python/plugins"]
    sys.path.insert(0, str(ROOT))
    from qgis.core import QgsApplication
    from qgis.PyQt.QtWidgets import QMainWindow

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import qgis_plugin

    class Iface:
        def __init__(self) -> None:
            self.window = QMainWindow()

        def mainWindow(self):  # noqa: N802
            return self.window

        def addToolBarIcon(self, action) -> None:  # noqa: N802
            pass

        def addPluginToRasterMenu(self, menu, action) -> None:  # noqa: N802
            pass

    from qgis.core import QgsProject, QgsRasterLayer

    sample = ROOT / "sample_data"
    layers = {name: QgsRasterLayer(str(sample / file), name) for name, file in (("hsi", "hsi.tif"), ("lidar", "dsm.tif"))}
    for layer in layers.values():
        QgsProject.instance().addMapLayer(layer)
    plugin = qgis_plugin.classFactory(Iface())
    plugin.initProcessing()
    algorithm = plugin.map_algorithm_id(str((sample / "sample_model.safetensors").resolve()))
    render_dialog(algorithm, out, {"hsi": layers["hsi"].id(), "lidar": layers["lidar"].id()})
    print(f"{out} written ({algorithm})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "qgis_map_dialog.png")
