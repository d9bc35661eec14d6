"""The plugin in real QGIS (Debian's python3-qgis, headless): load through classFactory, list the
provider's algorithms, map the sample scene with one and two layers, cancel midway, run through
qgis_process, and render the mapping dialog."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.shutil import copy

from mamol_core import __version__

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
MODEL = SAMPLE / "sample_model.safetensors"
#: The plugin's words for assigning a raster its CRS.
ASSIGN = ("Raster › Projections › Assign projection… (it sets the file's own CRS, which mamol reads; a CRS set in the layer's "
          "properties is not)")
QGIS_PATHS = ["/usr/lib/python3/dist-packages", "/usr/share/qgis/python/plugins"]

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
for _path in QGIS_PATHS:
    if Path(_path).is_dir() and _path not in sys.path:
        sys.path.append(_path)
qgis_core = pytest.importorskip("qgis.core", reason="QGIS is not installed (apt-get install python3-qgis qgis-providers)")

from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsRasterLayer  # noqa: E402
from qgis.PyQt.QtWidgets import QMainWindow  # noqa: E402

# Where QGIS finds its data providers (delimited text among them), set before any test makes a layer
QgsApplication.setPrefixPath(os.environ.get("QGIS_PREFIX_PATH", "/usr"), True)

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
    from qgis.core import QgsSettings

    QgsSettings().remove("mamol")  # the plugin's settings from earlier runs (models it remembers) must not leak in
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
    return "mamol:map_sample_model"  # from the model's name (the file's name: the sample model has none of its own)


def test_plugin_registers_provider_button_and_menu(plugin, map_id):
    loaded, iface = plugin
    ids = sorted(a.id() for a in loaded.provider.algorithms())
    assert ids == sorted(["mamol:train", map_id, "mamol:evaluate_sample_model"])
    assert [a.text() for a in iface.toolbar] == ["Map land cover (MaMOL)…"]
    assert [a.text() for _, a in iface.menu] == ["Map land cover (MaMOL)…", "Train MaMOL model…", "MaMOL models…",
                                              "Set up mamol environment…"]
    algorithm = QgsApplication.processingRegistry().algorithmById(map_id)
    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == ["hsi", "lidar", "AOI", "EXTENT", "MASK", "SIEVE", "ESTIMATE", "DEVICE", "OUTPUT", "CONFIDENCE", "AVAILABILITY",
                     "PROBABILITIES", "POLYGONS"]
    assert loaded.provider.supportedOutputRasterLayerExtensions() == ["tif"]  # mamol-map writes GeoTIFFs only
    assert loaded.provider.supportedOutputVectorLayerExtensions() == ["gpkg", "geojson"]  # and polygons to these only


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
    with pytest.raises(QgsProcessingException, match="The hsi slot holds 'dsm', 1 band, but the model's hsi has 24 bands: give that "
                       r"sensor's raster\. If its bands are separate layers, stack them first \(Raster › Miscellaneous › Build virtual "
                       r"raster…, 'Place each input file into a separate band', resolution 'Highest'\)"):
        run(map_id, {"hsi": str(SAMPLE / "dsm.tif"), "OUTPUT": str(tmp_path / "wrong.tif")})  # refused before mamol-map runs
    with rasterio.open(SAMPLE / "dsm.tif") as src:  # an alpha band is a mask, not a band
        heights, profile = src.read(1), src.profile
    with rasterio.open(tmp_path / "dsm_alpha.tif", "w", **(profile | {"count": 2, "nodata": None})) as dst:
        dst.write(np.stack([heights, np.where(np.arange(heights.shape[1]) < 40, 0, 255) * np.ones_like(heights)]))
    with rasterio.open(tmp_path / "dsm_alpha.tif", "r+") as dst:
        dst.colorinterp = [ColorInterp.gray, ColorInterp.alpha]
    with pytest.raises(QgsProcessingException, match="The hsi slot holds 'dsm_alpha', 1 band and an alpha band, but the model's hsi"):
        run(map_id, {"hsi": str(tmp_path / "dsm_alpha.tif"), "OUTPUT": str(tmp_path / "wrong.tif")})
    result = run(map_id, {"lidar": str(tmp_path / "dsm_alpha.tif"), "OUTPUT": str(tmp_path / "alpha.tif")})
    with rasterio.open(result["OUTPUT"]) as out:
        classes = out.read(1)
    assert (classes[:, :40] == 0).all() and (classes[:, 46:] > 0).all()  # transparent columns hold no data
    import geopandas
    from shapely.geometry import Polygon

    geopandas.GeoDataFrame({"id": [1]}, geometry=[Polygon([(0, 0), (1, 0), (1, 1)])], crs="EPSG:4326").to_file(tmp_path / "far.gpkg")
    feedback = Recording()
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {"hsi": str(SAMPLE / "hsi.tif"), "AOI": str(tmp_path / "far.gpkg"), "OUTPUT": str(tmp_path / "far.tif")}, feedback)
    message = str(error.value)
    assert f"the area to map (layer 'far', {tmp_path / 'far.gpkg'}): does not overlap the input rasters" in message and \
        "Traceback" not in message and "\n" not in message
    assert not any("does not overlap" in line for line in feedback.lines)  # shown once, as the error, not also in the log
    assert not (tmp_path / "far.tif").exists()


def test_a_layer_in_another_unit_is_a_warning_of_the_run(map_id, tmp_path):
    with rasterio.open(SAMPLE / "hsi.tif") as src:
        profile, cube = src.profile, src.read()
    with rasterio.open(tmp_path / "hsi_dn.tif", "w", **{**profile, "dtype": "float32"}) as dst:
        dst.write(cube.astype("float32") * 1000)  # another scale
    feedback = Recording()
    run(map_id, {"hsi": str(tmp_path / "hsi_dn.tif"), "lidar": str(SAMPLE / "dsm.tif"), "OUTPUT": str(tmp_path / "m.tif")}, feedback)
    assert any(f"layer 'hsi_dn' in the hsi slot ({tmp_path / 'hsi_dn.tif'}): its hsi values look unlike those the model was trained on"
               in w for w in feedback.warnings), feedback.warnings
    assert not any("look unlike" in line for line in feedback.lines)


def test_a_unit_fix_is_told_by_the_raster_calculator(map_id):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(map_id)
    told = ("/d/dsm ft.tif: its lidar values are in ft (declared), where the model's were in metre (declared): the model reads heights "
            "or lengths 3.28 times too large; convert them (gdal_calc.py -A '/d/dsm ft.tif' --calc=\"A*0.3048\" --type=Float32 "
            "--outfile='/d/dsm ft_metre.tif', then gdal_edit.py -units metre '/d/dsm ft_metre.tif'), or, if they are in metre already, "
            "declare that "
            "(gdal_edit.py -units metre '/d/dsm ft.tif')")
    assert algorithm.in_qgis_words(told, {"/d/dsm ft.tif": "layer 'dsm ft' in the lidar slot"}) == (
        "layer 'dsm ft' in the lidar slot: its lidar values are in ft (declared), where the model's were in metre (declared): the model "
        "reads heights or lengths 3.28 times too large; convert them (Processing Toolbox › GDAL › Raster miscellaneous › Raster "
        "calculator, expression A*0.3048, type Float32), or, if they are in metre already, declare that (gdal_edit.py -units metre on "
        "its file, in the OSGeo4W Shell or a terminal)")


def test_bands_to_put_in_order_are_told_by_translate(map_id):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(map_id)
    told = ("/d/hsi r.tif: its bands are those of the hsi raster the model was trained on in another order (band 1 is '640 nm', "
            "which was band 3); the model reads bands by position, so put them in its order: gdal_translate -b 3 -b 2 -b 1 -b 4 "
            "'/d/hsi r.tif' 'hsi r_ordered.tif'")
    assert algorithm.in_qgis_words(told, {"/d/hsi r.tif": "layer 'hsi r' in the hsi slot"}).endswith(
        "so put them in its order: Raster › Conversion › Translate (convert format)…, Advanced Parameters › Additional command-line "
        "parameters '-b 3 -b 2 -b 1 -b 4', then use the new raster")


class Recording(QgsProcessingFeedback):
    """Keeps the warnings and console lines an algorithm reports."""

    def __init__(self):
        super().__init__()
        self.warnings, self.lines = [], []

    def pushWarning(self, text):  # noqa: N802
        self.warnings.append(text)

    def pushConsoleInfo(self, text):  # noqa: N802
        self.lines.append(text)


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
        assert any(name.startswith(f"mamol_qgis/wheels/mamol-{__version__}-") and name.endswith(".whl") for name in zipped.namelist())
        zipped.extractall(plugins)
    sys.path.insert(0, str(plugins))
    try:
        from mamol_qgis.setup_dialog import default_requirement

        assert default_requirement() == str(next((plugins / "mamol_qgis" / "wheels").glob("mamol-*.whl")))  # "Create" installs it
    finally:
        sys.path.remove(str(plugins))
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


def test_results_load_in_one_group_named_after_the_model_and_inputs_each_styled(map_id, tmp_path):
    import processing
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    outputs = {"OUTPUT": str(tmp_path / "map.tif"), "CONFIDENCE": str(tmp_path / "confidence.tif"),
               "AVAILABILITY": str(tmp_path / "sensors.tif"), "PROBABILITIES": str(tmp_path / "probabilities.tif")}
    processing.runAndLoadResults(map_id, {"hsi": str(SAMPLE / "hsi.tif"), "lidar": str(SAMPLE / "dsm.tif"), **outputs})
    QgsApplication.processEvents()
    group = project.layerTreeRoot().findGroup("sample_model — hsi + lidar")
    assert group is not None
    layers = [(node.name(), node.isVisible(), node.layer().renderer().type()) for node in group.findLayers()]
    assert layers == [("Land cover", True, "paletted"), ("Confidence (%)", False, "singlebandpseudocolor"),
                      ("Sensors used", False, "paletted"), ("Class probabilities (%)", False, "singlebandpseudocolor")]
    legend = [label for label, _ in group.findLayers()[2].layer().renderer().legendSymbologyItems()]
    assert legend == ["hsi only", "lidar only", "hsi + lidar (all)"]
    assert [label for label, _ in group.findLayers()[0].layer().renderer().legendSymbologyItems()][:2] == ["Grass", "Trees"]
    processing.runAndLoadResults(map_id, {"lidar": str(SAMPLE / "dsm.tif"), "OUTPUT": str(tmp_path / "again.tif")})
    QgsApplication.processEvents()
    assert project.layerTreeRoot().findGroup("sample_model — lidar") is not None
    project.clear()


def test_sensor_slots_are_filled_from_layers_named_like_the_modalities(plugin, map_id):
    from qgis.core import QgsProject

    loaded, _ = plugin
    project = QgsProject.instance()
    project.clear()
    hsi = QgsRasterLayer(str(SAMPLE / "hsi.tif"), "HSI cube")
    dsm = QgsRasterLayer(str(SAMPLE / "dsm.tif"), "dsm")
    project.addMapLayers([hsi, dsm])
    assert loaded.initial_layers(map_id) == {"hsi": hsi.id(), "lidar": dsm.id()}  # "HSI cube" is not "hsi"; the file hsi.tif is
    lidar = QgsRasterLayer(str(SAMPLE / "dsm.tif"), "LiDAR")
    project.addMapLayer(lidar)
    assert loaded.initial_layers(map_id) == {"hsi": hsi.id(), "lidar": lidar.id()}  # the modality's own name before "dsm"
    project.clear()


def test_mapping_ids_come_from_model_names_and_survive_a_move(plugin, tmp_path):
    from qgis_plugin import settings

    loaded, _ = plugin
    moved = tmp_path / "elsewhere" / "sample_model.safetensors"
    moved.parent.mkdir()
    shutil.copy(MODEL, moved)
    settings.remember_model(str(moved))
    try:
        ids = loaded.provider.mapping_ids()
        assert ids[str(MODEL.resolve())] == "map_sample_model" and ids[str(moved.resolve())] == "map_sample_model_2"
    finally:
        from qgis.core import QgsSettings

        QgsSettings().remove("mamol/models")
        loaded.provider.refreshAlgorithms()


def categorized(layer, field, classes):
    from qgis.core import QgsCategorizedSymbolRenderer, QgsRendererCategory, QgsSymbol
    from qgis.PyQt.QtGui import QColor

    categories = []
    for value, colour, label in classes:
        symbol = QgsSymbol.defaultSymbol(layer.geometryType())
        symbol.setColor(QColor(colour))
        categories.append(QgsRendererCategory(value, symbol, label))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))


def test_class_table_from_the_ground_truths_categorized_style(qgis_app, tmp_path):
    from qgis.core import QgsVectorLayer

    from qgis_plugin.classes import class_table

    truth = QgsVectorLayer(str(SAMPLE / "train_points.gpkg"), "truth", "ogr")
    assert class_table(truth, "landcover") is None  # no categorized style: mamol numbers names itself
    categorized(truth, "landcover", [("Water", "#0000ff", "open water"), ("Grass", "#00ff00", "Grass"), ("", "#000000", "other")])
    assert class_table(truth, "landcover") == {"1": {"name": "Water", "color": "#0000ff"}, "2": {"name": "Grass", "color": "#00ff00"}}
    truth.saveNamedStyle(str(tmp_path / "style.qml"))
    plain = QgsVectorLayer(str(SAMPLE / "train_points.gpkg"), "plain", "ogr")
    assert class_table(plain, "landcover", str(tmp_path / "style.qml")) == class_table(truth, "landcover")
    with pytest.raises(QgsProcessingException, match="does not categorize the field 'code'"):
        class_table(plain, "code", str(tmp_path / "style.qml"))
    categorized(truth, "landcover", [("Water", "#0000ff", "Water"), ("Water ", "#000099", "water, typed with a space")])
    assert class_table(truth, "landcover") == {"1": {"name": "Water", "color": "#0000ff"}}  # values mamol reads as one class, once
    import geopandas

    points = geopandas.read_file(SAMPLE / "train_points.gpkg")
    points.assign(code=(points["landcover"] == "Grass").astype(int) + 1).to_file(tmp_path / "coded.gpkg")
    coded = QgsVectorLayer(str(tmp_path / "coded.gpkg"), "coded", "ogr")
    categorized(coded, "code", [(1, "#0000ff", "  "), (2, "#00ff00", " Grass ")])  # labels of spaces, and spaced
    assert class_table(coded, "code") == {"1": {"name": "1", "color": "#0000ff"}, "2": {"name": "Grass", "color": "#00ff00"}}
    categorized(coded, "code", [(0, "#000000", "0"), (1, "#0000ff", "Water")])  # Classify's category of 0, unlabelled to mamol
    assert class_table(coded, "code") == {"1": {"name": "Water", "color": "#0000ff"}}


def test_class_table_from_the_label_rasters_paletted_style(qgis_app, tmp_path):
    from qgis.core import QgsPalettedRasterRenderer
    from qgis.PyQt.QtGui import QColor

    from qgis_plugin.classes import raster_class_table

    shutil.copy(SAMPLE / "train_labels.tif", tmp_path / "truth.tif")  # QGIS may write statistics beside the raster it reads
    truth = QgsRasterLayer(str(tmp_path / "truth.tif"), "truth")
    assert raster_class_table(truth) is None  # a grey style: the classes.json beside it, if any, names the classes
    truth.saveNamedStyle(str(tmp_path / "grey.qml"))
    classes = [QgsPalettedRasterRenderer.Class(value, QColor(colour), label)
               for value, colour, label in ((2, "#00ff00", "Grass"), (1, "#0000ff", "Water"), (0, "#000000", "unlabelled"))]
    truth.setRenderer(QgsPalettedRasterRenderer(truth.dataProvider(), 1, classes))
    assert raster_class_table(truth) == {"2": {"name": "Grass", "color": "#00ff00"}, "1": {"name": "Water", "color": "#0000ff"}}
    truth.saveNamedStyle(str(tmp_path / "style.qml"))
    plain = QgsRasterLayer(str(tmp_path / "truth.tif"), "plain")
    assert raster_class_table(plain, str(tmp_path / "style.qml")) == raster_class_table(truth)
    with pytest.raises(QgsProcessingException, match="is no paletted"):
        raster_class_table(plain, str(tmp_path / "grey.qml"))
    with rasterio.open(tmp_path / "truth.tif", "r+") as dataset:  # a colour table of its own: QGIS lists 256 numbered entries
        dataset.write_colormap(1, {0: (0, 0, 0, 0), 1: (0, 0, 255, 255), 2: (0, 255, 0, 255)})
    coloured = QgsRasterLayer(str(tmp_path / "truth.tif"), "coloured")
    assert coloured.renderer().type() == "paletted" and raster_class_table(coloured) is None  # no names: classes.json decides
    twice = [QgsPalettedRasterRenderer.Class(value, QColor("#00ff00"), "Grass") for value in (1, 2)]
    coloured.setRenderer(QgsPalettedRasterRenderer(coloured.dataProvider(), 1, twice))
    with pytest.raises(QgsProcessingException, match="the style of 'coloured': names two classes 'Grass'; give each category"):
        raster_class_table(coloured)
    from qgis_plugin.classes import check_names_once

    with pytest.raises(QgsProcessingException, match="the style of 'f': names two classes 'Forêt' and 'Forêt ', which differ only in "
                                                      "spaces"):  # a categorized style's labels, as QGIS's Classify may give them
        check_names_once(["Forêt", "Prairie", "Forêt "], "the style of 'f'")


def test_training_names_sensors_and_classes_saves_the_report_beside_the_model(plugin, tmp_path):
    import processing
    from qgis.core import QgsVectorLayer

    from mamol_core.config import ProtocolSpec, TrainSpec
    from qgis_plugin.train_algorithm import MIN_STEPS, TrainModel

    truth = QgsVectorLayer(str(SAMPLE / "train_points.gpkg"), "truth", "ogr")
    order = [("Water", "#1f78b4"), ("Road", "#555555"), ("Grass", "#9be564"), ("Trees", "#1b7837"), ("Bare soil", "#d9b382"),
             ("Buildings", "#e31a1c")]
    categorized(truth, "landcover", [(name, colour, name) for name, colour in order])
    model = tmp_path / "models" / "forest.safetensors"  # the folder is made
    result = processing.run("mamol:train", {"HSI": str(SAMPLE / "hsi.tif"), "LIDAR": QgsRasterLayer(str(SAMPLE / "dsm.tif"), "dsm"),
                                            "TRUTH": truth, "CLASS_FIELD": "landcover", "EPOCHS": 1, "MIN_STEPS": 7,
                                            "TEST_TRUTH": QgsVectorLayer(str(SAMPLE / "test_polygons.gpkg"), "test", "ogr"), "BACKBONE": 3,
                                            "DEVICE": 1, "ANY_ANGLE": True, "SCALING": 1, "NAME": "Sample forest", "MODEL": str(model)},
                             feedback=QgsProcessingFeedback())
    assert result["MODEL"] == str(model) and result["REPORT"] == str(model.with_suffix(".report"))
    config = json.loads(subprocess.run([str(Path(sys.executable).parent / "mamol-info"), str(model), "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    info = config["model"]
    assert config["train"]["rotation"] == "any" and config["train"]["normalization"] == "quantile"
    assert config["train"]["min_steps"] == 7 and MIN_STEPS == TrainSpec.min_steps  # the dialog's default is mamol-train's
    dialog = TrainModel()
    dialog.initAlgorithm()
    assert dialog.parameterDefinition("EPOCHS").defaultValue() == TrainSpec.epochs  # and so are these, copied into the plugin
    assert dialog.parameterDefinition("MISSING_RATE").defaultValue() == ProtocolSpec.missing_rate
    assert dialog.parameterDefinition("MISSING").defaultValue() == ProtocolSpec.missing
    assert info["name"] == "Sample forest" and [m["name"] for m in info["modalities"]] == ["hsi", "lidar"]
    assert [(c["name"], c["color"]) for c in info["classes"]] == order
    assert (model.with_suffix(".report") / "report.html").is_file()
    with rasterio.open(SAMPLE / "test_labels.tif") as labels:  # the test polygons were scored, not a held-out share
        assert json.loads((model.with_suffix(".report") / "metrics.json").read_text())["context"]["test_pixels"] == \
            int((labels.read(1) > 0).sum())
    assert QgsApplication.processingRegistry().algorithmById("mamol:map_sample_forest") is not None
    from qgis_plugin.report import show_report

    dialog = show_report(model.with_suffix(".report") / "report.html")
    text = dialog.browser.toPlainText()
    assert "Accuracy per sensor combination" in text and "hsi + lidar (all)" in text
    dialog.close()

    import geopandas

    from qgis_plugin.algorithms import model_results

    points = geopandas.read_file(SAMPLE / "train_points.gpkg").groupby("landcover").head(1)  # one point a class: none held out
    points.to_file(tmp_path / "one_each.gpkg")
    again = processing.run("mamol:train", {"HSI": str(SAMPLE / "hsi.tif"), "TRUTH": str(tmp_path / "one_each.gpkg"),
                                           "CLASS_FIELD": "landcover", "EPOCHS": 1, "MIN_STEPS": 2, "BACKBONE": 3, "DEVICE": 1,
                                           "MODEL": str(model)}, feedback=QgsProcessingFeedback())
    assert again["REPORT"] is None and model_results(str(model)) == {}  # the earlier model's report stays, as no report of this one
    algorithm = TrainModel()
    algorithm.initAlgorithm()
    default = Path(algorithm.parameterDefinition("MODEL").defaultValue())
    assert default.parent.name == "mamol_models" and default.name.startswith("landcover_model_") and not default.exists()
    with pytest.raises(QgsProcessingException, match="a MaMOL model is a .safetensors file"):
        processing.run("mamol:train", {"HSI": str(SAMPLE / "hsi.tif"), "TRUTH": truth, "CLASS_FIELD": "landcover",
                                       "MODEL": str(tmp_path / "elsewhere" / "forest.pt")}, feedback=QgsProcessingFeedback())
    assert not (tmp_path / "elsewhere").exists()


def test_a_training_warning_names_the_ground_truth_layer_not_the_plugins_copy(plugin, tmp_path):
    import geopandas
    import processing
    from qgis.core import QgsVectorLayer
    from shapely.geometry import box

    with rasterio.open(SAMPLE / "hsi.tif") as src:
        b, crs = src.bounds, src.crs
    squares = [box(b.left + x, b.top - y - 30, b.left + x + 30, b.top - y) for x, y in ((0, 0), (20, 20), (200, 0), (200, 200))]
    geopandas.GeoDataFrame({"landcover": ["Grass", "Trees", "Trees", "Grass"]}, geometry=squares, crs=crs).to_file(
        tmp_path / "truth.gpkg", layer="overlap")
    truth = QgsVectorLayer(f"{tmp_path / 'truth.gpkg'}|layername=overlap", "overlap", "ogr")  # as QGIS loads a GeoPackage layer
    feedback = Recording()
    processing.run("mamol:train", {"LIDAR": str(SAMPLE / "dsm.tif"), "TRUTH": truth, "CLASS_FIELD": "landcover", "EPOCHS": 1,
                                   "MIN_STEPS": 2, "BACKBONE": 3, "DEVICE": 1, "MODEL": str(tmp_path / "m.safetensors")}, feedback=feedback)
    assert [w for w in feedback.warnings if w.startswith("the ground truth (layer 'overlap'): 25 pixels lie under features of "
                                                        "different classes (Grass, Trees; e.g. at")], feedback.warnings
    geopandas.read_file(tmp_path / "truth.gpkg", layer="overlap").to_file(tmp_path / "fields.geojson")
    feedback = Recording()  # a layer that is one plain file is passed as it is, and named with its path
    processing.run("mamol:train", {"LIDAR": str(SAMPLE / "dsm.tif"), "TRUTH": str(tmp_path / "fields.geojson"), "CLASS_FIELD": "landcover",
                                   "EPOCHS": 1, "MIN_STEPS": 2, "BACKBONE": 3, "DEVICE": 1, "MODEL": str(tmp_path / "m2.safetensors")},
                   feedback=feedback)
    assert [w for w in feedback.warnings if w.startswith(f"the ground truth (layer 'fields', {tmp_path / 'fields.geojson'}): 25 pixels "
                                                        "lie under features of different classes")], feedback.warnings


def test_ground_truth_from_a_table_of_coordinates_is_trained_on(plugin, tmp_path):
    import geopandas
    import processing
    from qgis.core import QgsVectorLayer

    points = geopandas.read_file(SAMPLE / "train_points.gpkg")
    points.assign(x=points.geometry.x, y=points.geometry.y).drop(columns="geometry").to_csv(tmp_path / "truth.csv", index=False)
    uri = f"{(tmp_path / 'truth.csv').as_uri()}?type=csv&xField=x&yField=y&crs={points.crs.to_string()}"
    truth = QgsVectorLayer(uri, "field survey", "delimitedtext")  # Layer › Add Delimited Text Layer…
    assert truth.isValid() and truth.featureCount() == len(points)
    model = tmp_path / "m.safetensors"
    processing.run("mamol:train", {"LIDAR": str(SAMPLE / "dsm.tif"), "TRUTH": truth, "CLASS_FIELD": "landcover", "EPOCHS": 1,
                                   "MIN_STEPS": 2, "BACKBONE": 3, "DEVICE": 1, "MODEL": str(model)}, feedback=QgsProcessingFeedback())
    config = json.loads(subprocess.run([str(Path(sys.executable).parent / "mamol-info"), str(model), "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    assert sorted(c["name"] for c in config["model"]["classes"]) == sorted(set(points["landcover"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.report", "m.safetensors", "truth.csv"]  # nothing written beside the table


class CancelTraining(QgsProcessingFeedback):
    """Cancels once training has taken its fifth step, like a user pressing Cancel; keeps the log lines."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def setProgressText(self, text):  # noqa: N802
        super().setProgressText(text)
        if text.startswith("training: ") and int(text.split()[1].split("/")[0]) >= 5:
            self.cancel()

    def pushConsoleInfo(self, text):  # noqa: N802
        self.lines.append(text)


def test_cancelled_training_goes_on_where_it_stopped_when_run_again(plugin, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext

    model = tmp_path / "rows.safetensors"
    shutil.copy(SAMPLE / "train_labels.tif", tmp_path)  # QGIS writes statistics beside a raster it opens
    shutil.copy(SAMPLE / "classes.json", tmp_path)  # beside the label raster: its classes' names and colours
    parameters = {"LIDAR": str(SAMPLE / "dsm.tif"), "TRUTH_RASTER": str(tmp_path / "train_labels.tif"), "EPOCHS": 1, "BACKBONE": 3,
                  "DEVICE": 1, "MODEL": str(model)}
    with pytest.raises(QgsProcessingException, match="kept in .*rows.state.safetensors: run Train again"):
        processing.run("mamol:train", parameters, feedback=CancelTraining())
    assert not model.exists() and model.with_name("rows.state.safetensors").exists()
    again = Recording()
    processing.run("mamol:train", parameters, feedback=again)
    assert any(line.startswith("resuming at step ") for line in again.lines), again.lines
    assert model.is_file() and not model.with_name("rows.state.safetensors").exists()
    info = json.loads(subprocess.run([str(Path(sys.executable).parent / "mamol-info"), str(model), "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    named = json.loads((SAMPLE / "classes.json").read_text())
    assert [c["name"] for c in info["model"]["classes"]] == [named[code]["name"] for code in sorted(named, key=int)]
    training = QgsApplication.processingRegistry().createAlgorithmById("mamol:train")
    both = {**parameters, "TRUTH": str(SAMPLE / "train_points.gpkg"), "CLASS_FIELD": "landcover"}
    assert training.checkParameterValues(both, QgsProcessingContext()) == (False, "Give ground truth once: a vector layer or a "
                                                                                  "label raster, not both.")
    vector_test = {**parameters, "TEST_TRUTH": str(SAMPLE / "test_polygons.gpkg")}  # which field names its classes?
    assert training.checkParameterValues(vector_test, QgsProcessingContext())[1].startswith("Test labels as a vector layer are "
                                                                                             "read by the ground truth's class field")
    both_tests = {**vector_test, "TEST_TRUTH_RASTER": str(SAMPLE / "test_labels.tif")}
    assert training.checkParameterValues(both_tests, QgsProcessingContext())[1] == ("Give test labels once: a vector layer or a "
                                                                                   "label raster, not both.")


def test_paths_in_messages_become_layer_names_once_and_whole(plugin):
    from qgis_plugin.algorithms import known_layer_file, replace_paths

    made = {}
    for role in ("the hsi slot", "the lidar slot"):  # one file given in two slots: both are named
        known_layer_file(QgsRasterLayer(str(SAMPLE / "dsm.tif"), "heights"), made, role)
    assert made[str(SAMPLE / "dsm.tif")] == f"layer 'heights' in the hsi slot and layer 'heights' in the lidar slot ({SAMPLE / 'dsm.tif'})"
    made = {}
    for name, spelling in (("first", f"{SAMPLE}/./dsm.tif"), ("second", str(SAMPLE / "dsm.tif"))):  # one file spelt two ways
        known_layer_file(QgsRasterLayer(spelling, name), made, f"the {name} slot")
    assert made and all(text == f"layer 'first' in the first slot and layer 'second' in the second slot ({spelling})"
                        for spelling, text in made.items())
    made = {"/d/scene": "layer 'scene' in the hsi slot (/d/scene)", "/d/scene_mask.tif": "layer 'mask' in the mask (/d/scene_mask.tif)"}
    text = replace_paths("/d/scene_mask.tif: has no CRS; /d/scene2.tif and /d/scene are not /d/scene. /x/d/scene is another", made)
    assert text == ("layer 'mask' in the mask (/d/scene_mask.tif): has no CRS; /d/scene2.tif and layer 'scene' in the hsi slot (/d/scene) "
                    "are not layer 'scene' in the hsi slot (/d/scene). /x/d/scene is another")


def test_training_messages_about_a_file_name_the_layer_that_holds_it(plugin, tmp_path):
    import processing

    shutil.copy(SAMPLE / "dsm.tif", tmp_path / "heights.tif")
    with rasterio.open(tmp_path / "heights.tif", "r+") as wrong:
        wrong.crs = "EPSG:4326"  # metres labelled as degrees
    shutil.copy(SAMPLE / "train_labels.tif", tmp_path)
    parameters = {"LIDAR": str(tmp_path / "heights.tif"), "TRUTH_RASTER": str(tmp_path / "train_labels.tif"), "EPOCHS": 1,
                  "BACKBONE": 3, "DEVICE": 1, "MODEL": str(tmp_path / "m.safetensors")}
    with pytest.raises(QgsProcessingException) as error:
        processing.run("mamol:train", parameters, feedback=QgsProcessingFeedback())
    assert f"layer 'heights' in the lidar slot ({tmp_path / 'heights.tif'}): its extent cannot lie in its CRS EPSG:4326" in str(error.value) and \
        f"({ASSIGN})" in str(error.value), str(error.value)
    assert not (tmp_path / "m.safetensors").exists()
    parameters = {**parameters, "LIDAR": str(SAMPLE / "dsm.tif"), "HSI": str(SAMPLE / "hsi.tif"), "MISSING": "sar"}
    with pytest.raises(QgsProcessingException) as error:  # options are named as the dialog names them
        processing.run("mamol:train", parameters, feedback=QgsProcessingFeedback())
    assert str(error.value).startswith("the Missing modality 'sar': 'sar' is not one of the modalities"), str(error.value)
    with rasterio.open(tmp_path / "train_labels.tif") as src:
        profile, codes = src.profile, src.read(1)
    with rasterio.open(tmp_path / "rgb_labels.tif", "w", **{**profile, "count": 3}) as dst:  # a class map saved as a picture
        dst.write(np.stack([codes] * 3))
    with pytest.raises(QgsProcessingException) as error:
        processing.run("mamol:train", {**parameters, "MISSING": "both", "TRUTH_RASTER": str(tmp_path / "rgb_labels.tif")},
                       feedback=QgsProcessingFeedback())
    assert "a label raster holds one band of class codes, this one 3; give its band of codes alone (Raster › Conversion › " \
        "Translate (convert format)…, Advanced Parameters › Additional command-line parameters '-b 1')" in str(error.value), str(error.value)
    import geopandas
    from qgis.core import QgsVectorLayer

    points = geopandas.read_file(SAMPLE / "train_points.gpkg")
    points.assign(code=(points["landcover"] == "Grass").astype(int) + 1).to_file(tmp_path / "coded.gpkg")
    coded = QgsVectorLayer(str(tmp_path / "coded.gpkg"), "coded", "ogr")
    categorized(coded, "code", [(0, "#000000", "0"), (1, "#0000ff", "Water")])  # Classify's 0, and no category for code 2
    del parameters["TRUTH_RASTER"]
    with pytest.raises(QgsProcessingException) as error:
        processing.run("mamol:train", {**parameters, "MISSING": "both", "TRUTH": coded, "CLASS_FIELD": "code"}, feedback=QgsProcessingFeedback())
    message = str(error.value)  # the table the plugin wrote from the style is named as the style, and mended there
    assert "label values [2] have no category in the style of 'code'; add a category for each (Symbology › Classify)" in message, message
    assert "classes.json" not in message and "outside 1..255" not in message, message
    coded.saveNamedStyle(str(tmp_path / "style.qml"))  # a style of the field 'code' given for the field 'landcover'
    with pytest.raises(QgsProcessingException, match="does not categorize the field 'landcover'"):  # prepare's error reaches the caller
        processing.run("mamol:train", {**parameters, "MISSING": "both", "TRUTH": coded, "CLASS_FIELD": "landcover",
                                       "CLASS_STYLE": str(tmp_path / "style.qml")}, feedback=QgsProcessingFeedback())


def test_evaluating_a_model_on_test_labels_from_some_of_its_sensors_writes_its_report(plugin, tmp_path):
    from qgis.core import QgsProcessingContext, QgsVectorLayer

    evaluate = QgsApplication.processingRegistry().createAlgorithmById("mamol:evaluate_sample_model")
    names = [p.name() for p in evaluate.parameterDefinitions()]
    assert names == ["hsi", "lidar", "TRUTH", "CLASS_FIELD", "TRUTH_RASTER", "DEVICE", "REPORT"]
    import geopandas

    geopandas.read_file(SAMPLE / "test_polygons.gpkg").iloc[:6].to_file(tmp_path / "some.gpkg", driver="GPKG")  # quick to score
    truth = QgsVectorLayer(str(tmp_path / "some.gpkg"), "test", "ogr")
    check = lambda parameters: evaluate.checkParameterValues(parameters, QgsProcessingContext())  # noqa: E731
    assert check({"lidar": str(SAMPLE / "dsm.tif")}) == (False, "Give test labels: a vector layer with a class field, or a label raster.")
    assert check({"lidar": str(SAMPLE / "dsm.tif"), "TRUTH": truth}) == (False, "Choose the class field of the test labels.")
    report = tmp_path / "lidar only"
    result = run("mamol:evaluate_sample_model", {"lidar": str(SAMPLE / "dsm.tif"), "TRUTH": truth, "CLASS_FIELD": "landcover",
                                                 "DEVICE": 1, "REPORT": str(report)})
    assert result["REPORT"] == str(report) and (report / "report.html").is_file()
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["context"]["modalities_given"] == ["lidar"] and metrics["results"]["overall"]["samples"] > 0


def test_mapping_warns_before_run_about_sensors_the_model_is_weak_on(map_id, tmp_path):
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(map_id)
    assert "<tr><td>hsi + lidar</td>" in algorithm.shortHelpString() and "<tr><td>lidar</td>" in algorithm.shortHelpString()
    complete = json.loads((SAMPLE / "sample_model_report" / "metrics.json").read_text())["results"]["complete"]["oa"]
    assert f"<td align='right'>{complete:.2f} %</td>" in algorithm.shortHelpString()  # as the report writes it: 99.99 is not 100.0
    lidar = json.loads((SAMPLE / "sample_model_report" / "metrics.json").read_text())["results"]["missing hsi"]["oa"]
    feedback = Recording()  # mamol-map warns, by the report beside the model
    run(map_id, {"lidar": str(SAMPLE / "dsm.tif"), "OUTPUT": str(tmp_path / "weak.tif")}, feedback)
    assert feedback.warnings == [f"sample_model scored {lidar:.2f} % overall accuracy from lidar on its test pixels (all sensors: "
                                 f"{complete:.2f} %); expect a weaker map from this sensor"]


def test_the_help_panel_marks_combinations_scored_on_few_pixels(map_id, monkeypatch):
    from qgis_plugin import algorithms

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(map_id)
    monkeypatch.setattr(algorithms, "model_results", lambda path: {"complete": {"oa": 95.0, "samples": 5000},
                                                                     "missing hsi": {"oa": 96.0, "samples": 11}})
    table = algorithm.accuracy_table()
    assert "<td>hsi + lidar</td><td align='right'>95.00 %</td><td align='right'>5000</td>" in table
    assert "<td>lidar</td><td align='right'>96.00 %</td><td align='right'>11, too few to judge</td>" in table
    assert "<td>hsi</td>" not in table  # a combination its report does not hold
    monkeypatch.setattr(algorithms, "model_results", lambda path: {"missing hsi": {"oa": 50.0}})  # counts unrecorded
    assert "<td>lidar</td><td align='right'>50.00 %</td><td align='right'></td>" in algorithm.accuracy_table()
    assert algorithm.in_qgis_words("m was scored from lidar on none of its test pixels, too few to tell how well it maps from these "
                                   "sensors; evaluate it on test labels with these sensors alone (mamol-eval) before relying on "
                                   "the map").endswith("alone (Processing Toolbox › MaMOL › Evaluate a model) before relying on the map")


def test_mamol_map_is_told_of_the_report_the_train_dialog_wrote_away_from_the_model(plugin, tmp_path):
    from mamol_core.modelfile.header import read_config
    from qgis_plugin import settings
    from qgis_plugin.algorithms import MapLandCover

    model, custom = tmp_path / "m.safetensors", tmp_path / "custom report"
    model.write_bytes((SAMPLE / "sample_model.safetensors").read_bytes())
    algorithm = MapLandCover(str(model), dataclasses.asdict(read_config(model)), "map_m")
    assert algorithm.report_args() == []  # none recorded: mamol-map looks beside the model itself
    settings.remember_report(str(model), str(custom))
    assert algorithm.report_args() == []  # the folder holds no report (yet)
    shutil.copytree(SAMPLE / "sample_model_report", custom)
    assert algorithm.report_args() == ["--report", str(custom.resolve())]


def test_the_help_panel_shows_no_report_of_an_earlier_model_at_the_same_path(plugin, tmp_path):
    from mamol_core.modelfile.header import header_digest as core_digest
    from qgis_plugin.algorithms import header_digest, model_results

    model, report = tmp_path / "m.safetensors", tmp_path / "m_report"
    model.write_bytes((SAMPLE / "sample_model.safetensors").read_bytes())
    shutil.copytree(SAMPLE / "sample_model_report", report)
    metrics = json.loads((report / "metrics.json").read_text())
    assert model_results(str(model)) == metrics["results"]  # a report that records no model (mamol 0.3.0): shown
    assert header_digest(str(model)) == core_digest(model)  # the rule mamol-train and mamol-eval record by
    for digest, shown in ((header_digest(str(model)), True), ("0" * 64, False)):
        (report / "metrics.json").write_text(json.dumps(metrics | {"context": metrics["context"] | {"model_header_sha256": digest}}))
        assert model_results(str(model)) == (metrics["results"] if shown else {})


def test_the_accuracy_table_follows_the_report_the_train_dialog_wrote(plugin, tmp_path):
    from qgis_plugin import settings
    from qgis_plugin.algorithms import model_results, report_results

    model, custom = tmp_path / "m.safetensors", tmp_path / "custom report"
    model.write_bytes((SAMPLE / "sample_model.safetensors").read_bytes())
    shutil.copytree(SAMPLE / "sample_model_report", custom)
    metrics = json.loads((custom / "metrics.json").read_text())
    assert model_results(str(model)) == {} and report_results(str(model), custom) is None  # records no model: not this one's, strictly
    settings.remember_report(str(model), str(custom))
    assert model_results(str(model)) == metrics["results"]  # a report in the dialog's folder feeds the help panel


def map_check_with_environment(map_id: str, tmp_path: Path, monkeypatch, script: str) -> tuple[bool, str]:
    """The map dialog's check before run, with MAMOL_BIN_DIR holding a mamol-map that runs ``script``."""
    from qgis.core import QgsProcessingContext

    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "mamol-map").write_text(f"#!/bin/sh\n{script}\n")
    (folder / "mamol-map").chmod(0o755)
    monkeypatch.setenv("MAMOL_BIN_DIR", str(folder))
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(map_id)
    return algorithm.checkParameterValues({"lidar": str(SAMPLE / "dsm.tif"), "OUTPUT": str(tmp_path / "x.tif")},
                                          QgsProcessingContext())


def test_a_broken_environment_is_reported_before_run(map_id, tmp_path, monkeypatch):
    ok, message = map_check_with_environment(map_id, tmp_path, monkeypatch,
                                             "echo 'ModuleNotFoundError: No module named torch' >&2; exit 1")
    assert not ok and "does not run (ModuleNotFoundError: No module named torch)" in message
    assert "Raster > MaMOL > Set up mamol environment…" in message


def test_an_environment_of_another_mamol_release_is_reported_before_run_and_in_the_setup_window(plugin, map_id, tmp_path,
                                                                                                  monkeypatch):
    from qgis.core import QgsProcessingContext

    from qgis_plugin.environment import plugin_version

    ok, message = map_check_with_environment(map_id, tmp_path, monkeypatch, "echo 'mamol-map, version 0.1.0'")
    assert not ok and message.startswith(f"{tmp_path / 'bin'}/mamol-map is mamol 0.1.0, but this plugin drives mamol "
                                         f"{plugin_version()}; ")
    training = QgsApplication.processingRegistry().createAlgorithmById("mamol:train")
    assert training.checkParameterValues({"LIDAR": str(SAMPLE / "dsm.tif"), "TRUTH_RASTER": str(SAMPLE / "train_labels.tif"),
                                          "OUTPUT": str(tmp_path / "m.safetensors")}, QgsProcessingContext()) == (False, message)
    dialog = plugin[0].open_setup_dialog()
    assert dialog.status.text() == f"Not working: {message}."
    dialog.close()


def test_setup_window_shows_the_environment_and_finds_one(plugin, tmp_path, monkeypatch):
    from qgis.core import QgsSettings

    import qgis_plugin.setup_dialog as setup_dialog
    from qgis_plugin import settings

    loaded, _ = plugin
    QgsSettings().setValue("mamol/bin_dir", str(tmp_path / "nowhere"))
    try:
        dialog = loaded.open_setup_dialog()  # mamol imports in this Python, so it runs in-process, as the dialogs would
        assert dialog.status.text() == f"Working: mamol {__version__} runs inside QGIS's Python (no mamol-map in {tmp_path / 'nowhere'})."
        monkeypatch.setattr(setup_dialog, "imports_in_process", lambda: False)  # as in QGIS's own Python, without torch
        dialog.refresh()
        assert dialog.status.text().startswith("Not working: mamol was not found in ")
        dialog.find()  # MAMOL_BIN_DIR holds this venv's executables
        assert settings.bin_dir() == str(Path(sys.executable).parent.resolve())
        assert dialog.status.text().startswith(f"Working: mamol {__version__} works: torch ") and settings.bin_dir() in dialog.status.text()
        dialog.refresh()
        assert dialog.status.text() == f"Working: mamol-map, version {__version__} ({settings.bin_dir()})."
        assert dialog.requirement.text() == f"mamol=={__version__}"  # no wheel inside the source tree's plugin: its release from the index
        dialog.requirement.setText('"mamol==0.2')  # a stray quote: said, and Create stays usable (the lock was kept)
        dialog.create()
        assert "cannot be read (No closing quotation)" in dialog.log.toPlainText() and setup_dialog.CREATING.acquire(blocking=False)
        setup_dialog.CREATING.release()
        dialog.requirement.setText(f"mamol=={__version__}")
        path = tmp_path / "setup.png"
        assert dialog.grab().save(str(path)) and path.stat().st_size > 5_000
        dialog.close()
    finally:
        QgsSettings().remove("mamol/bin_dir")


def test_without_an_environment_the_map_button_says_so_instead_of_blaming_the_model(plugin, monkeypatch):
    from qgis.PyQt.QtWidgets import QFileDialog, QMessageBox

    import qgis_plugin.plugin as plugin_module

    loaded, _ = plugin
    asked = []
    monkeypatch.setattr(plugin_module, "describe_environment", lambda bin_dir: "not found")
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text: asked.append(text) or QMessageBox.No)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args: pytest.fail("no model should be asked for"))
    loaded.open_map_dialog()
    assert asked and asked[0].startswith("The mamol environment is not set up yet")


def test_an_area_with_unsaved_edits_or_a_crs_set_on_its_layer_is_read_as_qgis_shows_it(map_id, tmp_path):
    """The plugin passed the layer's file: edits not saved yet and a CRS corrected in Layer Properties were lost
    (the saved polygon lies far away, and the file's CRS says degrees of metres)."""
    import geopandas
    from qgis.core import QgsCoordinateReferenceSystem, QgsGeometry, QgsVectorLayer
    from shapely.geometry import box

    with rasterio.open(SAMPLE / "hsi.tif") as src:
        b, epsg = src.bounds, src.crs.to_epsg()
    inputs = {"hsi": str(SAMPLE / "hsi.tif"), "lidar": str(SAMPLE / "dsm.tif")}
    far = box(b.right + 1000, b.top + 1000, b.right + 1100, b.top + 1100)
    geopandas.GeoDataFrame({"id": [1]}, geometry=[far], crs=f"EPSG:{epsg}").to_file(tmp_path / "area.gpkg")
    edited = QgsVectorLayer(str(tmp_path / "area.gpkg"), "area", "ogr")
    assert edited.startEditing()
    inside = QgsGeometry.fromWkt(box(b.left + 10, b.bottom + 10, b.right - 10, b.top - 10).wkt)
    assert edited.changeGeometry(next(edited.getFeatures()).id(), inside)
    result = run(map_id, {**inputs, "AOI": edited, "OUTPUT": str(tmp_path / "edited.tif")})
    with rasterio.open(result["OUTPUT"]) as out:
        assert (out.read(1) > 0).mean() > 0.8
    edited.rollBack()
    assert geopandas.read_file(tmp_path / "area.gpkg").geometry[0].equals(far)  # the file as saved
    geopandas.GeoDataFrame({"id": [1]}, geometry=[box(b.left + 10, b.bottom + 10, b.right - 10, b.top - 10)],
                           crs="EPSG:4326").to_file(tmp_path / "degrees.gpkg")  # metres labelled as degrees
    corrected = QgsVectorLayer(str(tmp_path / "degrees.gpkg"), "degrees", "ogr")
    corrected.setCrs(QgsCoordinateReferenceSystem(f"EPSG:{epsg}"))
    result = run(map_id, {**inputs, "AOI": corrected, "OUTPUT": str(tmp_path / "corrected.tif")})
    with rasterio.open(result["OUTPUT"]) as out:
        assert (out.read(1) > 0).mean() > 0.8


def test_a_raster_whose_crs_is_set_in_qgis_otherwise_than_in_its_file_is_refused_with_the_fix(map_id, tmp_path):
    from qgis.core import QgsCoordinateReferenceSystem, QgsRasterLayer

    dsm = QgsRasterLayer(str(SAMPLE / "dsm.tif"), "DSM 2021")
    with rasterio.open(SAMPLE / "dsm.tif") as src:
        own = src.crs.to_epsg()
    dsm.setCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {"hsi": str(SAMPLE / "hsi.tif"), "lidar": dsm, "OUTPUT": str(tmp_path / "m.tif")})
    assert f"has the CRS EPSG:3857 set in QGIS, but its file ({SAMPLE / 'dsm.tif'}) says EPSG:{own}, which mamol reads; give the file " \
        "the right one with Raster › Projections › Assign projection…" in str(error.value), str(error.value)
    assert not list(tmp_path.iterdir())


def test_map_inside_a_drawn_polygon_or_an_extent_sieved_with_polygons(map_id, tmp_path):
    import processing
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProject, QgsVectorLayer

    with rasterio.open(SAMPLE / "hsi.tif") as src:
        b, epsg = src.bounds, src.crs.to_epsg()
    drawn = QgsVectorLayer(f"Polygon?crs=EPSG:{epsg}", "drawn", "memory")  # an analyst's sketch: not a file
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(b.left + 10, b.bottom + 10), QgsPointXY(b.left + 10, b.top - 10),
                                                    QgsPointXY(b.right - 10, b.bottom + 10)]]))
    drawn.dataProvider().addFeatures([feature])
    inputs = {"hsi": str(SAMPLE / "hsi.tif"), "lidar": str(SAMPLE / "dsm.tif")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(map_id, {**inputs, "AOI": drawn, "OUTPUT": str(tmp_path / "drawn.tif")})
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning) and "QgsVectorFileWriter" in str(w.message)]
    with rasterio.open(result["OUTPUT"]) as out:
        mapped = (out.read(1) > 0).mean()
    assert 0.3 < mapped < 0.7  # a triangle of its bounding box
    with pytest.raises(QgsProcessingException) as error:  # the temporary file holding the extent is named as the analyst gave it
        run(map_id, {**inputs, "EXTENT": f"0,1,0,1 [EPSG:{epsg}]", "OUTPUT": str(tmp_path / "far.tif")})
    assert "the extent to map: does not overlap the input rasters; give an area inside them" in str(error.value) and \
        "inside the extent" not in str(error.value), str(error.value)
    shutil.copy(SAMPLE / "dsm.tif", tmp_path / "dsm.tif")
    with pytest.raises(QgsProcessingException) as error:  # options named as the dialog names them
        run(map_id, {**inputs, "lidar": str(tmp_path / "dsm.tif"), "OUTPUT": str(tmp_path / "dsm.tif")})
    assert "is the input the lidar layer; writing the Land cover output there would destroy it" in str(error.value), str(error.value)
    with pytest.raises(QgsProcessingException, match=r"The Land cover polygons output \(.*poly\.shp\): save it as a GeoPackage"):
        run(map_id, {**inputs, "POLYGONS": str(tmp_path / "poly.shp"), "OUTPUT": str(tmp_path / "poly.tif")})
    import geopandas
    from shapely.geometry import box

    geopandas.GeoDataFrame({"id": [1]}, geometry=[box(b.left + 10, b.bottom + 10, b.right - 10, b.top - 10)],
                           crs="EPSG:4326").to_file(tmp_path / "degrees.gpkg")  # metres labelled as degrees
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {**inputs, "AOI": str(tmp_path / "degrees.gpkg"), "OUTPUT": str(tmp_path / "degrees.tif")})
    assert f"the area to map (layer 'degrees', {tmp_path / 'degrees.gpkg'}): its extent cannot lie in its CRS EPSG:4326" in \
        str(error.value) and "(Processing Toolbox › Vector general › Assign projection, then use the new layer)" in str(error.value), \
        str(error.value)
    # the mask, with metres labelled as degrees: one line naming the mask, not a traceback
    shutil.copy(SAMPLE / "dsm.tif", tmp_path / "mask.tif")
    with rasterio.open(tmp_path / "mask.tif", "r+") as wrong:
        wrong.crs = "EPSG:4326"
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {**inputs, "MASK": str(tmp_path / "mask.tif"), "OUTPUT": str(tmp_path / "masked.tif")})
    assert f"layer 'mask' in the mask ({tmp_path / 'mask.tif'}): its extent cannot lie in its CRS EPSG:4326" in str(error.value) and \
        f"({ASSIGN})" in str(error.value) and "Traceback" not in str(error.value), str(error.value)
    with rasterio.open(tmp_path / "dsm.tif", "r+") as wrong:
        wrong.crs = "EPSG:4326"  # metres labelled as degrees
    with pytest.raises(QgsProcessingException) as error:  # the fix by QGIS's menu, not a GDAL command
        run(map_id, {**inputs, "lidar": str(tmp_path / "dsm.tif"), "OUTPUT": str(tmp_path / "wrong.tif")})
    assert f"layer 'dsm' in the lidar slot ({tmp_path / 'dsm.tif'}): its extent cannot lie in its CRS EPSG:4326" in str(error.value) and \
        f"the CRS is wrong: assign the right one ({ASSIGN})" in str(error.value), str(error.value)
    bare = tmp_path / "l'étude" / "bare.tif"  # an apostrophe, quoted in the GDAL command the menu replaces
    bare.parent.mkdir()
    with rasterio.open(SAMPLE / "dsm.tif") as src, rasterio.open(bare, "w", **(src.profile | {"crs": None})) as dst:
        dst.write(src.read())  # no CRS, on the sample's grid
    with rasterio.open(SAMPLE / "hsi.tif") as src:
        coarse = src.profile | {"width": src.width // 2, "height": src.height // 2, "transform": src.transform @ Affine.scale(2)}
        with rasterio.open(tmp_path / "coarse.tif", "w", **coarse) as dst:
            dst.write(src.read()[:, ::2, ::2])
    with pytest.raises(QgsProcessingException) as error:  # the dialog has no --assume-crs: the file needs its CRS
        run(map_id, {"hsi": str(tmp_path / "coarse.tif"), "lidar": str(bare), "OUTPUT": str(tmp_path / "bare_map.tif")})
    assert f"layer 'bare' in the lidar slot ({bare}): has no CRS; assign the one it is in (the model was " \
        "trained in EPSG:" in str(error.value) and str(error.value).endswith(f"): {ASSIGN}") and \
        "--assume-crs" not in str(error.value), str(error.value)
    with rasterio.open(SAMPLE / "dsm.tif") as src:
        heights, profile = src.read(1), src.profile
    with rasterio.open(tmp_path / "slc.tif", "w", **(profile | {"dtype": "complex64", "nodata": None})) as dst:
        dst.write((heights + 1j * heights).astype(np.complex64), 1)
    with pytest.raises(QgsProcessingException) as error:  # found before the run; the fix by the Processing Toolbox's GDAL calculator
        run(map_id, {**inputs, "lidar": str(tmp_path / "slc.tif"), "OUTPUT": str(tmp_path / "slc_map.tif")})
    assert "The layer 'slc' in the lidar slot holds complex values, such as single-look complex SAR: give its amplitude or intensity " \
        "(Processing Toolbox › GDAL › Raster miscellaneous › Raster calculator, expression abs(A), type Float32)." in str(error.value), \
        str(error.value)
    with rasterio.open(tmp_path / "marked.tif", "w", **(profile | {"count": 2, "nodata": None})) as dst:
        dst.write(np.stack([heights, heights]))  # a second band of heights, marked alpha by mistake
    with rasterio.open(tmp_path / "marked.tif", "r+") as dst:
        dst.colorinterp = [ColorInterp.gray, ColorInterp.alpha]
    with pytest.raises(QgsProcessingException) as error:  # the dialog lets it through to mamol, which says how to mark it a band
        run(map_id, {**inputs, "lidar": str(tmp_path / "marked.tif"), "OUTPUT": str(tmp_path / "marked_map.tif")})
    assert "band 2 is marked alpha but holds values between transparent and opaque" in str(error.value) and \
        "(Raster › Conversion › Translate (convert format)…, Advanced Parameters › Additional command-line parameters " \
        "'-colorinterp_2 undefined', then use the new raster)" in str(error.value), str(error.value)
    copy(SAMPLE / "dsm.tif", tmp_path / "dsm.nc", driver="netCDF")
    variable = QgsRasterLayer(f'NETCDF:"{tmp_path / "dsm.nc"}":Band1', "heights")
    assert variable.isValid()
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {**inputs, "lidar": variable, "OUTPUT": str(tmp_path / "variable_map.tif")})
    assert f"The layer 'heights' in the lidar slot is a layer inside {tmp_path / 'dsm.nc'}, which mamol cannot read by itself; " \
        "save it as a GeoTIFF first (right-click the layer › Export › Save As…, format GeoTIFF)" in str(error.value), str(error.value)
    extent = f"{b.left + 20},{b.left + 60},{b.bottom + 20},{b.bottom + 50} [EPSG:{epsg}]"
    result = run(map_id, {**inputs, "EXTENT": extent, "OUTPUT": str(tmp_path / "extent.tif")})
    with rasterio.open(result["OUTPUT"]) as out, rasterio.open(SAMPLE / "hsi.tif") as whole:
        assert out.width < whole.width and out.res == whole.res
        assert (out.read(1) > 0).sum() == 20 * 15  # 40 x 30 m at 2 m
    QgsProject.instance().clear()
    processing.runAndLoadResults(map_id, {**inputs, "SIEVE": 8, "POLYGONS": str(tmp_path / "polygons.gpkg"),
                                          "OUTPUT": str(tmp_path / "sieved.tif")})
    QgsApplication.processEvents()
    group = QgsProject.instance().layerTreeRoot().findGroup("sample_model — hsi + lidar")
    nodes = group.findLayers()
    assert [(n.name(), n.isVisible()) for n in nodes] == [("Land cover polygons", True), ("Land cover", False)]
    renderer = nodes[0].layer().renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "class"
    assert [c.label() for c in renderer.categories()][:2] == ["Grass", "Trees"]
    # "Save to GeoPackage…" with a layer name, into a new file: that layer loaded; another layer into that file: refused
    destination = f"ogr:dbname='{tmp_path / 'lidar.gpkg'}' table=\"lidar only\" (geom)"
    processing.runAndLoadResults(map_id, {"lidar": inputs["lidar"], "POLYGONS": destination, "OUTPUT": str(tmp_path / "lidar.tif")})
    QgsApplication.processEvents()
    loaded = QgsProject.instance().layerTreeRoot().findGroup("sample_model — lidar").findLayers()[0]
    assert loaded.name() == "Land cover polygons" and loaded.layer().source().endswith("lidar.gpkg|layername=lidar only")
    assert loaded.layer().featureCount() == len(geopandas.read_file(tmp_path / "lidar.gpkg", layer="lidar only")) > 0
    before = (tmp_path / "lidar.gpkg").read_bytes()
    beside = f"ogr:dbname='{tmp_path / 'lidar.gpkg'}' table=\"second\" (geom)"
    with pytest.raises(QgsProcessingException) as error:
        run(map_id, {"lidar": inputs["lidar"], "POLYGONS": beside, "OUTPUT": str(tmp_path / "again.tif")})
    assert "holds an earlier map's polygons as the layer 'lidar only' (replaced only by a layer of that name); give the polygons " \
        "a new file" in str(error.value) and (tmp_path / "lidar.gpkg").read_bytes() == before, str(error.value)
    QgsProject.instance().clear()


def test_estimate_only_writes_nothing_and_reports_the_time(map_id, tmp_path):
    feedback = Recording()
    result = run(map_id, {"lidar": str(SAMPLE / "dsm.tif"), "ESTIMATE": True, "OUTPUT": str(tmp_path / "never.tif")}, feedback)
    assert not (tmp_path / "never.tif").exists() and "OUTPUT" not in result
    assert any(line.startswith("estimate: ") and "nothing was written" in line for line in feedback.lines)


def test_models_window_lists_and_forgets_models(plugin, tmp_path):
    from qgis_plugin import settings

    from qgis.core import QgsSettings

    loaded, _ = plugin
    QgsSettings().remove("mamol/models")  # models earlier tests trained
    copy = tmp_path / "copy.safetensors"
    shutil.copy(MODEL, copy)
    settings.remember_model(str(copy))
    dialog = loaded.open_models_dialog()
    rows = [[dialog.tree.topLevelItem(i).text(c) for c in range(4)] for i in range(dialog.tree.topLevelItemCount())]
    assert rows == [["sample_model", "hsi, lidar", "mamol:map_sample_model", str(MODEL.resolve())],
                    ["sample_model", "hsi, lidar", "mamol:map_sample_model_2", str(copy.resolve())]]  # a copy keeps the model's name
    dialog.tree.topLevelItem(1).setSelected(True)
    dialog.remove()
    assert dialog.tree.topLevelItemCount() == 1 and copy.exists()
    assert QgsApplication.processingRegistry().algorithmById("mamol:map_sample_model_2") is None
    damaged = tmp_path / "damaged.safetensors"  # remembered when it was a model, damaged since: listed with why, to remove
    shutil.copy(MODEL, damaged)
    settings.remember_model(str(damaged))
    damaged.write_bytes(b"not a model")
    dialog.fill()
    row = [dialog.tree.topLevelItem(1).text(c) for c in range(4)]
    assert row[0] == "(cannot be read)" and "not a mamol model" in row[1] and row[2:] == ["", str(damaged.resolve())], row
    dialog.tree.topLevelItem(1).setSelected(True)
    dialog.remove()
    assert dialog.tree.topLevelItemCount() == 1 and str(damaged.resolve()) not in settings.known_models()
    assert loaded.map_algorithm_id(str(damaged)) is None and str(damaged.resolve()) not in settings.known_models()
    assert "not a mamol model" in loaded.provider.problem(str(damaged))
    dialog.close()
