"""Pictures of the plugin in real QGIS (headless) for the README: the mapping dialog with the
sample layers matched, the result group as it loads (layer tree and map), and the accuracy report
window. Needs Debian's python3-qgis; run with the mamol venv:
``python scripts/qgis_screenshot.py docs`` writes docs/qgis_map_dialog.png, docs/qgis_result.png and
docs/qgis_report.png."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def settle(rounds: int = 8) -> None:
    from qgis.core import QgsApplication

    for _ in range(rounds):
        QgsApplication.processEvents()


def render_dialog(algorithm_id: str, path: Path, parameters: dict | None = None) -> None:
    """Open the Processing dialog of ``algorithm_id`` offscreen (with ``parameters`` filled in) and save a picture of it."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication

    dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(algorithm_id))
    if parameters:
        dialog.setParameters(parameters)
    dialog.resize(900, 620)
    dialog.show()
    settle(5)
    if not dialog.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    dialog.close()


def render_result(group_name: str, path: Path) -> None:
    """The layer tree beside the map of the group ``group_name``'s visible layers, as loaded in the project."""
    from qgis.core import QgsLayerTreeModel, QgsProject
    from qgis.gui import QgsLayerTreeView, QgsMapCanvas
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtWidgets import QHBoxLayout, QWidget

    project = QgsProject.instance()
    group = project.layerTreeRoot().findGroup(group_name)
    window = QWidget()
    view = QgsLayerTreeView(window)
    model = QgsLayerTreeModel(project.layerTreeRoot(), window)
    view.setModel(model)
    view.expandAll()
    canvas = QgsMapCanvas(window)
    visible = [node.layer() for node in group.findLayers() if node.isVisible()]
    canvas.setLayers(visible)
    canvas.setDestinationCrs(visible[0].crs())
    canvas.setExtent(visible[0].extent())
    layout = QHBoxLayout(window)
    layout.addWidget(view, 2)
    layout.addWidget(canvas, 3)
    window.resize(QSize(1000, 520))
    window.show()
    canvas.refreshAllLayers()
    settle()
    canvas.waitWhileRendering()
    settle()
    if not window.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    window.close()


def render_report(html: Path, path: Path) -> None:
    """The accuracy report window of a trained model."""
    sys.path.insert(0, str(ROOT))
    from qgis_plugin.report import ReportDialog

    dialog = ReportDialog(html)
    dialog.resize(900, 760)
    dialog.show()
    settle()
    if not dialog.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    dialog.close()


def main(folder: Path) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("MAMOL_BIN_DIR", str(Path(sys.executable).parent))
    sys.path += ["/usr/lib/python3/dist-packages", "/usr/share/qgis/python/plugins"]
    sys.path.insert(0, str(ROOT))
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtWidgets import QMainWindow

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import processing
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

    sample = ROOT / "sample_data"
    layers = {name: QgsRasterLayer(str(sample / file), name) for name, file in (("hsi", "hsi.tif"), ("LiDAR", "dsm.tif"))}
    project = QgsProject.instance()
    for layer in layers.values():
        project.addMapLayer(layer)
    plugin = qgis_plugin.classFactory(Iface())
    plugin.initProcessing()
    algorithm = plugin.map_algorithm_id(str((sample / "sample_model.safetensors").resolve()))
    folder.mkdir(parents=True, exist_ok=True)
    render_dialog(algorithm, folder / "qgis_map_dialog.png", plugin.initial_layers(algorithm))
    with tempfile.TemporaryDirectory() as tmp:
        processing.runAndLoadResults(algorithm, {"hsi": layers["hsi"].id(), "lidar": layers["LiDAR"].id(),
                                                 "OUTPUT": f"{tmp}/landcover.tif", "CONFIDENCE": f"{tmp}/confidence.tif",
                                                 "AVAILABILITY": f"{tmp}/sensors.tif"})
        settle()
        for root_layer in layers.values():
            project.layerTreeRoot().findLayer(root_layer.id()).setItemVisibilityChecked(False)
        render_result("sample_model — hsi + lidar", folder / "qgis_result.png")
        project.clear()
    render_report(sample / "sample_model_report" / "report.html", folder / "qgis_report.png")
    print(f"{folder}/qgis_map_dialog.png, qgis_result.png and qgis_report.png written ({algorithm})")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")
