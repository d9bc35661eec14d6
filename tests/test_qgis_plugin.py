"""The plugin in real QGIS (Debian's python3-qgis, headless): load through classFactory, list the
provider's algorithms, map the sample scene with one and two layers, cancel midway, run through
qgis_process, and render the mapping dialog."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
MODEL = SAMPLE / "sample_model.safetensors"
QGIS_PATHS = ["/usr/lib/python3/dist-packages", "/usr/share/qgis/python/plugins"]

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
for _path in QGIS_PATHS:
    if Path(_path).is_dir() and _path not in sys.path:
        sys.path.append(_path)
qgis_core = pytest.importorskip("qgis.core", reason="QGIS is not installed (apt-get install python3-qgis qgis-providers)")

from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))


class Iface:
    """The part of QgisInterface the plugin uses, recording what it adds."""

    def __init__(self) -> None:
        self.window, self.toolbar, self.menu = QMainWindow(), [], []

    def mainWindow(self):  # noqa: N802
        return self.window

    def addToolBarIcon(self, action):  # noqa: N802
        self.toolbar.append(action)

    def removeToolBarIcon(self, action):  # noqa: N802
        self.toolbar.remove(action)

    def addPluginToRasterMenu(self, menu, action):  # noqa: N802
        self.menu.append((menu, action))

    def removePluginRasterMenu(self, menu, action):  # noqa: N802
        self.menu.remove((menu, action))


@pytest.fixture(scope="module")
def qgis_app(tmp_path_factory):
    os.environ["MAMOL_BIN_DIR"] = str(Path(sys.executable).parent)
    os.environ["MAMOL_QGIS_MODELS"] = str(MODEL)
    app = QgsApplication([], True, str(tmp_path_factory.mktemp("qgis_profile")))
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app


@pytest.fixture(scope="module")
def plugin(qgis_app):
    import qgis_plugin

    iface = Iface()
    loaded = qgis_plugin.classFactory(iface)
    loaded.initGui()
    yield loaded, iface
    loaded.unload()
    assert iface.toolbar == [] and iface.menu == []
    assert QgsApplication.processingRegistry().providerById("mamol") is None


@pytest.fixture(scope="module")
def map_id(plugin):
    from qgis_plugin.algorithms import algorithm_name

    return f"mamol:{algorithm_name(str(MODEL.resolve()))}"


def test_plugin_registers_provider_button_and_menu(plugin, map_id):
    loaded, iface = plugin
    ids = sorted(a.id() for a in loaded.provider.algorithms())
    assert ids == sorted(["mamol:train", map_id])
    assert [a.text() for a in iface.toolbar] == ["Map land cover (MaMOL)…"]
    assert len(iface.menu) == 3
    algorithm = QgsApplication.processingRegistry().algorithmById(map_id)
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == ["MODEL", "hsi", "lidar", "DEVICE", "OUTPUT", "PROBABILITIES", "CONFIDENCE", "AVAILABILITY"]


def run(map_id, parameters, feedback=None):
    import processing

    return processing.run(map_id, parameters, feedback=feedback or QgsProcessingFeedback())


def check_class_raster(path: str) -> np.ndarray:
    layer = QgsRasterLayer(path, "out")
    assert layer.isValid()
    with rasterio.open(SAMPLE / "hsi.tif") as reference, rasterio.open(path) as out:
        assert layer.crs().authid() == f"EPSG:{reference.crs.to_epsg()}"
        assert (layer.width(), layer.height()) == (reference.width, reference.height) == (out.width, out.height)
        assert out.transform == reference.transform
        assert out.colormap(1)[2] == (27, 120, 55, 255)
        classes = out.read(1)
    assert set(np.unique(classes)) <= set(range(1, 7)) and classes.min() >= 1
    return classes


def test_map_with_two_layers(map_id, tmp_path):
    result = run(map_id, {"hsi": str(SAMPLE / "hsi.tif"), "lidar": str(SAMPLE / "dsm.tif"),
                          "OUTPUT": str(tmp_path / "both.tif"), "AVAILABILITY": str(tmp_path / "avail.tif")})
    classes = check_class_raster(result["OUTPUT"])
    with rasterio.open(SAMPLE / "test_labels.tif") as src:
        truth = src.read(1)
    assert (classes[truth > 0] == truth[truth > 0]).mean() > 0.8
    with rasterio.open(result["AVAILABILITY"]) as src:
        assert np.all(src.read(1) == 3)
    assert (tmp_path / "both.qml").is_file()


def test_map_with_one_layer(map_id, tmp_path):
    result = run(map_id, {"lidar": QgsRasterLayer(str(SAMPLE / "dsm.tif"), "dsm"), "OUTPUT": str(tmp_path / "dsm_only.tif")})
    check_class_raster(result["OUTPUT"])


def test_no_layer_is_refused_and_cli_errors_are_one_line(map_id, tmp_path):
    with pytest.raises(QgsProcessingException, match="at least one modality"):
        run(map_id, {"OUTPUT": str(tmp_path / "none.tif")})
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {"hsi": str(SAMPLE / "dsm.tif"), "OUTPUT": str(tmp_path / "wrong.tif")})
    message = str(error.value)
    assert "dsm.tif: 1 band, but the model's hsi has" in message and "Traceback" not in message
    assert not (tmp_path / "wrong.tif").exists()


class CancelAfterStart(QgsProcessingFeedback):
    """Cancels as soon as the first tiles are done, like a user pressing Cancel."""

    def setProgress(self, progress):  # noqa: N802
        super().setProgress(progress)
        if progress > 0:
            self.cancel()


def test_cancel_midway_leaves_nothing(map_id, tmp_path):
    from mamol_core.data.rasters import write_raster

    with rasterio.open(SAMPLE / "dsm.tif") as src:
        transform = src.transform
    write_raster(tmp_path / "big_dsm.tif", np.random.default_rng(0).normal(205, 4, (1, 1200, 1200)).astype(np.float32), transform)
    feedback = CancelAfterStart()
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run(map_id, {"lidar": str(tmp_path / "big_dsm.tif"), "OUTPUT": str(tmp_path / "big_map.tif")}, feedback)
    assert 0 < feedback.progress() < 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big_dsm.tif"]


def test_plugin_zip_runs_through_qgis_process(map_id, tmp_path):
    from build_plugin import build

    archive = build(tmp_path / "dist")
    plugins = tmp_path / "home" / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zipped:
        assert "mamol_qgis/metadata.txt" in zipped.namelist() and "mamol_qgis/icon.png" in zipped.namelist()
        zipped.extractall(plugins)
    binary = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not Path(binary).exists():
        pytest.skip("qgis_process is not installed (apt-get install qgis)")
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen",
           "MAMOL_BIN_DIR": str(Path(sys.executable).parent), "MAMOL_QGIS_MODELS": str(MODEL)}
    subprocess.run([binary, "plugins", "enable", "mamol_qgis"], env=env, capture_output=True, text=True, timeout=120, check=True)
    out = tmp_path / "qp.tif"
    done = subprocess.run([binary, "run", map_id, "--", f"hsi={SAMPLE / 'hsi.tif'}", f"lidar={SAMPLE / 'dsm.tif'}", f"OUTPUT={out}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    check_class_raster(str(out))


def test_mapping_dialog_renders(map_id, tmp_path):
    from qgis_screenshot import render_dialog

    path = tmp_path / "dialog.png"
    render_dialog(map_id, path)
    with open(path, "rb") as handle:
        assert handle.read(4) == b"\x89PNG"
    assert path.stat().st_size > 10_000
