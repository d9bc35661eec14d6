"""Scene loading: discovery, vector ground truth, and one-line errors for bad input."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from mamol_core.config import ClassSpec, ProtocolSpec
from mamol_core.data.pixels import prepare_scene
from mamol_core.data.rasters import write_raster
from mamol_core.data.scene import open_scene, parse_inputs
from mamol_core.errors import MamolError


@pytest.fixture
def scene_copy(scene_dir, tmp_path):
    target = tmp_path / "scene"
    shutil.copytree(scene_dir, target)
    return target


def test_scene_discovers_modalities_and_labels(scene_dir):
    scene = open_scene(scene_dir)
    assert scene.names == ["dsm", "hsi"]
    assert [m.bands for m in scene.modalities] == [1, 8]
    assert len(scene.classes) == 6 and scene.classes[1].name == "Trees"
    assert (scene.train_labels > 0).sum() > 0 and (scene.test_labels > 0).sum() > 0


def test_normalisation_is_fitted_on_training_pixels_only(scene_dir):
    scene = open_scene(scene_dir)
    prepared, specs = prepare_scene(scene, ProtocolSpec(0.0, "both", 0), margin=5)
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dsm = src.read(1).astype(np.float64)
    train = scene.train_labels > 0
    assert np.isclose(specs[0].mean[0], dsm[train].mean(), rtol=1e-6)
    assert np.isclose(specs[0].std[0], dsm[train].std(), rtol=1e-5)
    assert not np.isclose(specs[0].mean[0], dsm[scene.test_labels > 0].mean(), rtol=1e-6)
    assert len(prepared.train) == train.sum()


def test_a_fill_value_under_one_training_pixel_that_sets_a_bands_scale_is_warned_about(scene_copy, caplog):
    with rasterio.open(scene_copy / "dsm.tif") as src:
        profile, data = src.profile, src.read()
    clean = open_scene(scene_copy)
    caplog.set_level(logging.WARNING)
    prepare_scene(clean, ProtocolSpec(0.0, "both", 0), margin=5)
    assert "training pixels, far from the others" not in caplog.text  # the scene as it is
    rows, cols = np.nonzero(clean.train_labels)
    data[0, rows[0], cols[0]] = -9999  # one of the training pixels, in a hole of the DSM whose fill is not declared
    with rasterio.open(scene_copy / "dsm.tif", "w", **profile) as dst:
        dst.write(data)
    _, specs = prepare_scene(open_scene(scene_copy), ProtocolSpec(0.0, "both", 0), margin=5)
    assert f"{scene_copy / 'dsm.tif'}: band 1 holds -9999 under 1 of the {rows.size} training pixels, far from the other values: a fill " \
        "not declared as nodata? Training reads it as a measurement, and as the band's scale (band 1: " in caplog.text
    assert f"so the model reads the band nearly flat; if -9999 marks missing data, declare it (gdal_edit.py -a_nodata -9999 " \
        f"{scene_copy / 'dsm.tif'}) and train again" in caplog.text
    assert specs[0].std[0] > 100


def test_a_paletted_raster_given_as_a_sensor_is_warned_about(scene_copy, caplog):
    with rasterio.open(scene_copy / "dsm.tif") as src:
        profile, heights = src.profile | {"dtype": "uint8", "nodata": None}, src.read()
    with rasterio.open(scene_copy / "dsm.tif", "w", **profile) as dst:  # heights rendered into 256 colours
        dst.write(np.clip((heights - heights.min()) * 8, 0, 255).astype("uint8"))
        dst.write_colormap(1, {i: (i, 255 - i, 0, 255) for i in range(256)})
    caplog.set_level(logging.WARNING)
    open_scene(scene_copy)
    assert f"{scene_copy / 'dsm.tif'}: band 1 holds indices into a colour table (a rendered map, or one classified into colours), " \
        "not measured values" in caplog.text
    assert "hsi.tif: band" not in caplog.text


def test_a_long_tail_or_a_second_kind_of_ground_is_no_fill_but_one_far_value_under_a_few_pixels_is():
    from mamol_core.data.plausibility import fill_under_training

    rng = np.random.default_rng(0)
    ndsm = np.where(rng.random(600) < 0.1, rng.uniform(5, 25, 600), rng.normal(0, 0.15, 600))  # ground, and 10 % trees and roofs
    sar = np.where(rng.random(600) < 0.02, rng.uniform(20, 80, 600), rng.gamma(1.0, 0.05, 600))  # linear power, 2 % towns
    nir = np.where(rng.random(600) < 0.83, rng.normal(0.02, 0.002, 600), rng.normal(0.35, 0.05, 600))  # mostly water
    for band in (ndsm, sar, nir):
        assert fill_under_training(band[None], [1], Path("x.tif"), "standard") is None
    heights = rng.normal(200.0, 6.0, (3, 800))
    heights[:, 5] = -9999.0  # a hole through every band, under one training pixel
    told = fill_under_training(heights, [1, 2, 3], Path("cube.tif"), "standard")
    assert told.startswith("cube.tif: bands 1-3 hold -9999 under 1 of the 800 training pixels") and told.count("\n") == 0
    assert ", and as the band's scale (band 1: " in told and told.endswith("(gdal_edit.py -a_nodata -9999 cube.tif) and train again")
    assert "band's scale" not in fill_under_training(heights, [1, 2, 3], Path("cube.tif"), "quantile")  # quantiles: no scale to set
    voids = np.append(rng.normal(200.0, 6.0, 800), [-32768.0, -32767.0])
    assert "holds -32768 and -32767 under 2 of the 802" in fill_under_training(voids[None], [2], Path("dem.tif"), "standard")
    towers = np.append(rng.normal(200.0, 6.0, 800), [9000.0, 9500.0])  # two different far values that are no usual fill
    assert fill_under_training(towers[None], [1], Path("dem.tif"), "standard") is None
    assert fill_under_training(np.full((1, 50), 3.0), [1], Path("flat.tif"), "standard") is None  # no spread to judge by


def test_vector_points_and_polygons_rasterise_like_the_rasters(scene_dir):
    scene = open_scene(scene_dir, labels=scene_dir / "train_points.gpkg", label_field="landcover",
                       test_labels=scene_dir / "test_polygons.gpkg")
    raster_scene = open_scene(scene_dir)
    assert np.array_equal(scene.train_labels, raster_scene.train_labels)
    agree = (scene.test_labels == raster_scene.test_labels).mean()
    assert agree > 0.97


def test_vector_in_another_crs_lands_on_the_same_pixels(scene_dir, tmp_path):
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg").to_crs("EPSG:4326")
    points.to_file(tmp_path / "points_wgs84.geojson", driver="GeoJSON")
    scene = open_scene(scene_dir, labels=tmp_path / "points_wgs84.geojson", label_field="landcover")
    assert not ((scene.test_labels > 0) & (scene.train_labels > 0)).any()
    assert np.array_equal(scene.train_labels + scene.test_labels, open_scene(scene_dir).train_labels)
    assert (scene.test_labels > 0).any()


def test_one_file_for_two_modalities_is_refused(scene_dir):
    with pytest.raises(MamolError, match="dsm.tif: given for both lidar and radar; pass each sensor.s own raster"):
        open_scene(scene_dir, parse_inputs([f"lidar={scene_dir / 'dsm.tif'}", f"radar={scene_dir}/../{scene_dir.name}/dsm.tif"]))


def test_wrong_path_is_a_one_line_error(tmp_path):
    with pytest.raises(MamolError, match="no such scene folder"):
        open_scene(tmp_path / "missing")
    with pytest.raises(MamolError, match="no such file"):
        open_scene(None, parse_inputs(["hsi=" + str(tmp_path / "nope.tif")]))


def test_rasters_on_different_grids_are_aligned_for_training_as_for_mapping(scene_copy, scene_dir):
    with rasterio.open(scene_copy / "dsm.tif") as src:
        dsm, transform, crs = src.read(), src.transform, src.crs
    write_raster(scene_copy / "dsm.tif", dsm[:, :30, :], transform)  # covers the top 30 rows only
    with rasterio.open(scene_copy / "hsi.tif") as src:
        cube = src.read()
        dst_transform, width, height = calculate_default_transform(crs, "EPSG:3857", 20, 20, *src.bounds)
        coarse = np.zeros((cube.shape[0], height, width), np.float32)
        reproject(cube.reshape(cube.shape[0], 20, 2, 20, 2).mean((2, 4)), coarse, src_transform=transform @ Affine.scale(2),
                  src_crs=crs, dst_transform=dst_transform, dst_crs="EPSG:3857", resampling=Resampling.bilinear)
    with rasterio.open(scene_copy / "hsi.tif", "w", driver="GTiff", width=width, height=height, count=cube.shape[0],
                       dtype="float32", crs="EPSG:3857", transform=dst_transform) as dst:
        dst.write(coarse)
    scene = open_scene(scene_copy)
    assert scene.grid.crs == crs and scene.grid.pixel_size == (2.0, 2.0)
    assert (scene.grid.transform.c - transform.c) % 2 == 0 and scene.grid.width >= 40 and scene.grid.height >= 40
    prepared, _ = prepare_scene(scene, ProtocolSpec(0.0, "both", 0), margin=0)
    dsm_index = scene.names.index("dsm")
    row0 = int(round((transform.f - scene.grid.transform.f) / -2)) - prepared.window.row_off
    col0 = int(round((transform.c - scene.grid.transform.c) / 2)) - prepared.window.col_off
    assert prepared.valid[dsm_index, row0 + 35, col0 + 5] == False  # noqa: E712 (below the cropped DSM)
    assert prepared.valid[dsm_index, row0 + 10, col0 + 10] and prepared.valid[1 - dsm_index, row0 + 10, col0 + 10]
    assert (scene.train_labels > 0).sum() == (open_scene(scene_dir).train_labels > 0).sum()


def test_label_value_missing_from_class_table(scene_copy):
    table = json.loads((scene_copy / "classes.json").read_text())
    del table["6"]
    (scene_copy / "classes.json").write_text(json.dumps(table))
    with pytest.raises(MamolError, match=r"train_labels\.tif: label values \[6\] are not in the class table"):
        open_scene(scene_copy)


def test_a_class_colour_that_is_no_hex_colour_is_refused_when_the_table_is_read(scene_copy):
    table = json.loads((scene_copy / "classes.json").read_text())
    table["2"]["color"] = "notacolor"
    (scene_copy / "classes.json").write_text(json.dumps(table))
    with pytest.raises(MamolError, match=r"classes\.json: the colour of class 2 \('notacolor'\) is not #rrggbb"):
        open_scene(scene_copy)


def test_a_class_table_that_gives_a_class_twice_is_refused(scene_copy):
    """Two codes of one name made a model with two 'Grass' classes and a report with two Grass columns; json keeps
    the last of two equal keys without a word."""
    table = json.loads((scene_copy / "classes.json").read_text())
    text = json.dumps({**table, "6": {**table["6"], "name": table["1"]["name"]}})
    empty = json.dumps({**table, "6": {**table["6"], "name": " "}})
    for written, message in ((text, f"the class name {table['1']['name']!r} is given twice"),
                             (empty, "class 6 has an empty name; give every class a name"),
                             (json.dumps(table)[:-1] + ', "02": {"name": "Other"}}', "the class value 2 is given twice"),
                             (json.dumps(table)[:-1] + ', "2": {"name": "Other"}}', "the key '2' is given twice in one object")):
        (scene_copy / "classes.json").write_text(written)
        with pytest.raises(MamolError, match=f"classes\\.json: {message}"):
            open_scene(scene_copy)


def test_test_labels_without_a_labelled_pixel_are_named(scene_copy, caplog):
    with rasterio.open(scene_copy / "test_labels.tif") as src:
        profile, empty = src.profile, np.zeros_like(src.read())
    with rasterio.open(scene_copy / "test_labels.tif", "w", **profile) as dst:
        dst.write(empty)
    caplog.set_level(logging.WARNING)
    assert not (open_scene(scene_copy).test_labels > 0).any()
    assert f"{scene_copy / 'test_labels.tif'}: no labelled pixel on the scene grid, so no accuracy report" in caplog.text
    assert "or move the file away to hold out 30% of the training labels instead" in caplog.text
    classes = open_scene(scene_copy).classes
    with pytest.raises(MamolError, match=r"test_labels\.tif: no labelled pixel on the scene grid \(every value is 0 or nodata"):
        open_scene(scene_copy, classes=classes, for_training=False)


def test_a_vector_label_file_without_features_says_so(scene_dir, tmp_path):
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points.iloc[:0].to_file(tmp_path / "empty.gpkg", driver="GPKG")
    with pytest.raises(MamolError, match=r"empty\.gpkg: holds no features; draw or import"):
        open_scene(scene_dir, labels=tmp_path / "empty.gpkg", label_field="landcover")


def test_test_codes_read_by_the_numbering_of_vector_names_are_warned_about(scene_dir, tmp_path, caplog):
    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    shutil.copy(scene_dir / "train_points.gpkg", tmp_path)  # class names, and no class table beside them
    caplog.set_level(logging.WARNING)
    open_scene(None, inputs, labels=tmp_path / "train_points.gpkg", label_field="landcover", test_labels=scene_dir / "test_labels.tif")
    assert "test_labels.tif: its codes are read as the numbers given to the class names of" in caplog.text
    caplog.clear()  # with a class table, the codes are the table's
    open_scene(None, inputs, labels=tmp_path / "train_points.gpkg", label_field="landcover", test_labels=scene_dir / "test_labels.tif",
               classes=scene_dir / "classes.json")
    assert "its codes are read as the numbers" not in caplog.text


def test_class_names_are_one_with_other_spaces_or_accents_and_warned_about_in_another_case(scene_dir, tmp_path, caplog):
    import unicodedata

    import geopandas

    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    grass = points.index[points["landcover"] == "Grass"][:3]
    points.loc[grass, "landcover"] = ["grass", "Grass ", "grass"]
    decomposed = unicodedata.normalize("NFD", "Bâti")  # "a" and a combining circumflex, as some systems store it
    water = points.index[points["landcover"] == "Water"]
    points.loc[water, "landcover"] = ["Bâti" if i % 2 else decomposed for i in range(len(water))]
    points.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    caplog.set_level(logging.WARNING)
    scene = open_scene(None, inputs, labels=tmp_path / "labels.gpkg", label_field="landcover")
    assert "labels.gpkg: field 'landcover' holds 'Grass' and 'grass', which differ only in case; they are " \
        "trained as 2 classes (spell them alike if they are one)" in caplog.text, caplog.text
    names = [c.name for c in scene.classes]
    assert {"Grass", "grass"} <= set(names) and "Grass " not in names and names.count("Bâti") == 1 and decomposed not in names
    table = tmp_path / "classes.json"
    table.write_text(json.dumps({str(c.value): {"name": unicodedata.normalize("NFD", c.name), "color": c.color} for c in scene.classes}))
    by_table = open_scene(None, inputs, labels=tmp_path / "labels.gpkg", label_field="landcover", classes=table)
    assert (by_table.train_labels == scene.train_labels).all()  # composed names in the field match decomposed ones in the table
    caplog.clear()
    open_scene(None, inputs, labels=scene_dir / "train_points.gpkg", label_field="landcover")
    assert "differ only in case" not in caplog.text


def test_a_label_raster_of_several_bands_is_refused(scene_copy):
    with rasterio.open(scene_copy / "train_labels.tif") as src:
        labels, transform = src.read(1), src.transform
    write_raster(scene_copy / "train_labels.tif", np.stack([labels, labels, labels]), transform)  # an RGB rendering, say
    with pytest.raises(MamolError, match=r"train_labels\.tif: a label raster holds one band of class codes, this one 3; give"):
        open_scene(scene_copy)


def test_a_class_without_training_pixels_is_warned_about(scene_copy, caplog):
    table = json.loads((scene_copy / "classes.json").read_text())
    table["42"] = {"name": "Glacier", "color": "#ffffff"}
    (scene_copy / "classes.json").write_text(json.dumps(table))
    caplog.set_level(logging.WARNING)
    open_scene(scene_copy)
    assert "no training pixel of 'Glacier' on the scene grid; the model cannot learn it" in caplog.text


def test_a_label_field_given_with_raster_labels_only_is_warned_about(scene_dir, caplog):
    open_scene(scene_dir, labels=scene_dir / "train_points.gpkg", label_field="landcover", test_labels=scene_dir / "test_labels.tif")
    assert "--label-field" not in caplog.text  # it reads the vector training labels
    open_scene(scene_dir, labels=scene_dir / "train_labels.tif", label_field="landcover")
    assert "--label-field landcover: no vector labels given (label rasters' values are the classes); it is not used" in caplog.text


def test_vector_without_the_class_field(scene_dir):
    with pytest.raises(MamolError, match=r"train_points\.gpkg: has no field 'class'; its fields are landcover"):
        open_scene(scene_dir, labels=scene_dir / "train_points.gpkg", label_field="class")


@pytest.mark.parametrize("values, message", [
    (lambda n: [None] * 3 + n[3:], "field 'c' is empty on 3 of"),
    (lambda n: [""] * 3 + n[3:], "field 'c' is empty on 3 of"),
    (lambda n: [300.0] + [1.0] * (len(n) - 1), "field 'c' holds 300; class codes are whole numbers 1..255"),
    (lambda n: [-1.0] + [1.0] * (len(n) - 1), "field 'c' holds -1; class codes"),
    (lambda n: [2.5] + [1.0] * (len(n) - 1), "field 'c' holds 2.5; class codes"),
    (lambda n: [float("inf")] + [1.0] * (len(n) - 1), "field 'c' holds inf; class codes"),
])
def test_class_fields_that_cannot_be_class_codes_or_names_are_refused(scene_dir, tmp_path, values, message):
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points["c"] = values(list(points["landcover"]))
    points.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    with pytest.raises(MamolError, match=f"labels.gpkg: {message}"):
        open_scene(scene_dir, labels=tmp_path / "labels.gpkg", label_field="c")


def test_a_text_field_of_whole_numbers_holds_class_codes_unless_the_table_names_them(scene_dir, tmp_path, caplog):
    """A shapefile or CSV often stores codes as text ("3", " 03", "3.0"): they are the codes the same field stored as
    numbers would be, not names to look up; a table whose class names are those numbers reads them as names."""
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    code_of = {c.name: c.value for c in open_scene(scene_dir).classes}
    points["c"] = [[str(code_of[name]), f" 0{code_of[name]}", f"{code_of[name]}.0"][i % 3] for i, name in enumerate(points["landcover"])]
    points["d"] = [str(code_of[name]) for name in points["landcover"]]
    points.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    expected = open_scene(scene_dir).train_labels
    with caplog.at_level(logging.INFO):
        scene = open_scene(scene_dir, labels=tmp_path / "labels.gpkg", label_field="c", test_labels=scene_dir / "test_labels.tif")
    assert np.array_equal(scene.train_labels, expected) and "whole numbers stored as text, read as class codes" in caplog.text
    count = len(open_scene(scene_dir).classes)
    named = [{"name": str(count + 1 - code), "color": "#000000"} for code in range(1, count + 1)]
    (tmp_path / "numbers.json").write_text(json.dumps({str(code): entry for code, entry in zip(range(1, count + 1), named)}))
    by_name = open_scene(scene_dir, labels=tmp_path / "labels.gpkg", label_field="d", test_labels=scene_dir / "test_labels.tif",
                         classes=tmp_path / "numbers.json")
    assert np.array_equal(by_name.train_labels, np.where(expected > 0, count + 1 - expected, 0))
    points["e"] = [str(code + 300) for code in points["d"].astype(int)]  # CORINE-like codes past 255: names, as before
    points["f"] = [str(code - 1) for code in points["d"].astype(int)]  # "0" is unlabelled, as in a field of numbers, and said to be
    points.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    sensors = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    names = open_scene(None, sensors, labels=tmp_path / "labels.gpkg", label_field="e", test_labels=scene_dir / "test_labels.tif")
    assert sorted(c.name for c in names.classes) == sorted(str(c.value + 300) for c in open_scene(scene_dir).classes)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        zero = open_scene(None, sensors, labels=tmp_path / "labels.gpkg", label_field="f")
    unlabelled = int((points["f"] == "0").sum())
    assert f"read as class codes; {unlabelled} of {len(points)} features hold \"0\", read as unlabelled and left out (if \"0\" names " \
        "a class, give a class table that names it)" in caplog.text
    assert [c.value for c in zero.classes] == list(range(1, count)) and zero.train_labels.max() == count - 1  # "0": no class
    (tmp_path / "zero.json").write_text(json.dumps({str(code + 1): {"name": str(code), "color": "#000000"} for code in range(count)}))
    named = open_scene(None, sensors, labels=tmp_path / "labels.gpkg", label_field="f", test_labels=scene_dir / "test_labels.tif",
                       classes=tmp_path / "zero.json")  # a table that names "0": names
    assert np.array_equal(named.train_labels, expected)


def test_class_names_a_label_raster_carries_are_its_class_table(scene_dir, tmp_path, caplog):
    """An ENVI Classification header's class names, or GDAL category names in an .aux.xml (mamol-map's maps carry them),
    say what the raster's codes are: they name the classes where no table is given, a scene table that names a code
    otherwise is refused, and test labels are matched to a model's classes by them."""
    from mamol_core.mapping.outputs import category_sidecar

    scene = open_scene(scene_dir)
    count = len(scene.classes)
    reversed_names = [c.name for c in reversed(scene.classes)]  # code k names the class the scene calls count + 1 - k
    for name in ("train_labels", "test_labels"):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            codes = src.read(1)
            profile = src.profile | {"driver": "ENVI"}
            profile.pop("compress", None), profile.pop("tiled", None), profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(tmp_path / f"{name}.dat", "w", **profile) as dst:
            dst.write(np.where(codes > 0, count + 1 - codes, 0).astype(codes.dtype)[None])
        with open(tmp_path / f"{name}.hdr", "a") as header:
            header.write(f"file type = ENVI Classification\nclasses = {count + 1}\nclass names = {{Unclassified, "
                         f"{', '.join(reversed_names)}}}\n")
    sensors = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    with caplog.at_level(logging.INFO):
        own = open_scene(None, sensors, labels=tmp_path / "train_labels.dat", test_labels=tmp_path / "test_labels.dat")
    assert [c.name for c in own.classes] == reversed_names and "train_labels.dat: class names from its own (1=" in caplog.text
    with pytest.raises(MamolError, match=f"train_labels.dat: its own class names call code 1 {reversed_names[0]!r}, where "
                                         f".*classes.json, which training reads its codes with, calls it {scene.classes[0].name!r}"):
        open_scene(scene_dir, labels=tmp_path / "train_labels.dat")
    scored = open_scene(scene_dir, for_training=False, labels=tmp_path / "test_labels.dat", classes=scene.classes)
    assert np.array_equal(scored.test_labels, scene.test_labels)  # matched to the model's classes by name, not by code
    with open(tmp_path / "test_labels.hdr", "r+") as header:  # test labels naming their codes otherwise than the training labels'
        text = header.read().replace(", ".join(reversed_names), ", ".join(c.name for c in scene.classes))
        header.seek(0), header.truncate(), header.write(text)
    with pytest.raises(MamolError, match=f"test_labels.dat: its own class names call code 1 {scene.classes[0].name!r}, where the "
                                         f"training labels' own table, which training reads its codes with, calls"):
        open_scene(None, sensors, labels=tmp_path / "train_labels.dat", test_labels=tmp_path / "test_labels.dat")
    given = open_scene(None, sensors, labels=tmp_path / "train_labels.dat", test_labels=tmp_path / "test_labels.dat",
                       classes=scene_dir / "classes.json")  # --classes given: the codes read as it says
    assert np.array_equal(given.test_labels, np.where(scene.test_labels > 0, count + 1 - scene.test_labels, 0))
    with rasterio.open(tmp_path / "test_labels.dat") as src, \
            rasterio.open(tmp_path / "map.tif", "w", **(src.profile | {"driver": "GTiff"})) as dst:  # GDAL category names, as mamol-map's
        dst.write(src.read())
    (tmp_path / "map.tif.aux.xml").write_text(category_sidecar([ClassSpec(count + 1 - c.value, c.name, c.color) for c in scene.classes]))
    scored = open_scene(None, sensors, for_training=False, labels=tmp_path / "map.tif", classes=scene.classes)
    assert np.array_equal(scored.test_labels, scene.test_labels)


def test_training_labels_outside_a_scene_take_the_class_table_beside_them(scene_dir, tmp_path, caplog):
    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    shutil.copy(scene_dir / "train_labels.tif", tmp_path / "truth.tif")
    assert [c.name for c in open_scene(None, inputs, labels=tmp_path / "truth.tif").classes][:2] == ["class 1", "class 2"]
    shutil.copy(scene_dir / "classes.json", tmp_path / "classes.json")
    with caplog.at_level(logging.INFO):
        scene = open_scene(None, inputs, labels=tmp_path / "truth.tif")
    assert scene.classes == open_scene(scene_dir).classes and "class names and colours from" in caplog.text


def test_labels_without_a_table_or_a_labelled_pixel_beside_vector_test_codes_with_their_own_table(scene_dir, tmp_path):
    """No table anywhere but beside the vector test labels: the raster training labels are numbered, the test codes
    read by them; an empty training raster is named as such."""
    import geopandas

    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    shutil.copy(scene_dir / "train_labels.tif", tmp_path / "train.tif")
    (tmp_path / "other").mkdir()
    polygons = geopandas.read_file(scene_dir / "test_polygons.gpkg")
    code_of = {c.name: c.value for c in open_scene(scene_dir).classes}
    polygons["code"] = [code_of[name] for name in polygons["landcover"]]
    polygons.to_file(tmp_path / "other" / "test.gpkg", driver="GPKG")
    shutil.copy(scene_dir / "classes.json", tmp_path / "other" / "classes.json")
    scene = open_scene(None, inputs, labels=tmp_path / "train.tif", test_labels=tmp_path / "other" / "test.gpkg", label_field="code")
    assert [c.name for c in scene.classes][0] == "class 1" and (scene.test_labels > 0).any()
    with rasterio.open(tmp_path / "train.tif", "r+") as dst:
        dst.write(np.zeros((1, dst.height, dst.width), dst.dtypes[0]))
    with pytest.raises(MamolError, match="train.tif: no labelled training pixels on the scene grid"):
        open_scene(None, inputs, labels=tmp_path / "train.tif", holdout=0)


def test_vector_codes_numbered_by_a_table_of_their_own_are_refused_against_the_scenes(scene_dir, tmp_path):
    """As for a label raster: training reads the codes with the scene's table, so a table beside the labels that
    numbers the classes otherwise is refused; names are matched whatever the tables' numbering."""
    import geopandas

    scene = open_scene(scene_dir)
    count = len(scene.classes)
    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    code_of = {c.name: count + 1 - c.value for c in scene.classes}  # their own numbering, the scene's reversed
    points["code"] = [code_of[name] for name in points["landcover"]]
    (tmp_path / "theirs").mkdir()
    points.to_file(tmp_path / "theirs" / "points.gpkg", driver="GPKG")
    (tmp_path / "theirs" / "classes.json").write_text(json.dumps({str(code): {"name": name} for name, code in code_of.items()}))
    with pytest.raises(MamolError, match=r"theirs/classes\.json: calls code 1 .*, where .*/classes\.json, which training reads "
                                         + re.escape(str(tmp_path / "theirs" / "points.gpkg")) + r"'s codes with, calls it .*; give the "
                                         r"table its codes follow \(--classes .*theirs/classes\.json\)"):
        open_scene(scene_dir, labels=tmp_path / "theirs" / "points.gpkg", label_field="code")
    by_table = open_scene(scene_dir, labels=tmp_path / "theirs" / "points.gpkg", label_field="code",
                          classes=tmp_path / "theirs" / "classes.json")  # the table given: read by it
    assert [c.name for c in by_table.classes] == [c.name for c in reversed(scene.classes)]
    by_name = open_scene(scene_dir, labels=tmp_path / "theirs" / "points.gpkg", label_field="landcover")
    assert np.array_equal(by_name.train_labels, open_scene(scene_dir, labels=scene_dir / "train_points.gpkg",
                                                           label_field="landcover").train_labels)


def test_a_float_label_raster_with_nan_for_unlabelled_reads_nan_as_unlabelled(scene_copy):
    expected = open_scene(scene_copy).train_labels
    with rasterio.open(scene_copy / "train_labels.tif") as src:
        labels, transform = src.read(1).astype(np.float32), src.transform
    labels[labels == 0] = np.nan
    write_raster(scene_copy / "train_labels.tif", labels, transform, nodata=np.nan)
    assert np.array_equal(open_scene(scene_copy).train_labels, expected)
    write_raster(scene_copy / "train_labels.tif", labels, transform)
    with pytest.raises(MamolError, match=r"train_labels\.tif: label raster holds NaN where no nodata value says it is unlabelled; "
                                         r"declare it \(gdal_edit\.py -a_nodata nan"):
        open_scene(scene_copy)
    write_raster(scene_copy / "train_labels.tif", np.where(np.isnan(labels), -9999, labels), transform)  # a fill not declared
    with pytest.raises(MamolError, match=r"train_labels\.tif: label values must lie in 0\.\.255 \(0 = unlabelled\); found -9999\.\.\d; if "
                                         r"-9999 marks unlabelled pixels, declare it \(gdal_edit\.py -a_nodata -9999 "):
        open_scene(scene_copy)


def test_test_labels_that_are_not_there_are_refused_not_replaced_by_a_holdout(scene_dir, tmp_path):
    with pytest.raises(MamolError, match="nope.gpkg: test labels not found"):
        open_scene(scene_dir, labels=scene_dir / "train_points.gpkg", label_field="landcover", test_labels=tmp_path / "nope.gpkg")


def test_vector_outside_the_scene(scene_dir, tmp_path):
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points.geometry = points.geometry.translate(50_000, 0)
    points.to_file(tmp_path / "far.gpkg", driver="GPKG")
    with pytest.raises(MamolError, match="far.gpkg: no labelled feature falls inside the scene"):
        open_scene(scene_dir, labels=tmp_path / "far.gpkg", label_field="landcover")


def test_empty_training_set_after_masking(scene_copy):
    for name in ("hsi", "dsm"):
        with rasterio.open(scene_copy / f"{name}.tif") as src:
            data, transform = src.read(), src.transform
        write_raster(scene_copy / f"{name}.tif", np.zeros_like(data), transform, nodata=0)
    scene = open_scene(scene_copy)
    with pytest.raises(MamolError, match=r"dsm\.tif: no valid value under any training pixel"):
        prepare_scene(scene, ProtocolSpec(0.5, "both", 0), margin=5)


def test_nodata_makes_a_modality_missing_for_that_pixel(scene_copy):
    with rasterio.open(scene_copy / "dsm.tif") as src:
        data, transform = src.read(), src.transform
    data[:, :, :20] = -9999
    write_raster(scene_copy / "dsm.tif", data.astype(np.float32), transform, nodata=-9999)
    prepared, _ = prepare_scene(open_scene(scene_copy), ProtocolSpec(0.0, "both", 0), margin=5)
    left = prepared.train.cols + prepared.window.col_off < 20
    assert left.any() and not prepared.train.presence[left, 0].any()
    assert prepared.train.presence[~left].all()


def test_holdout_split_keeps_groups_together(scene_dir):
    scene = open_scene(scene_dir, labels=scene_dir / "test_labels.tif", holdout=0.3, seed=1)
    assert scene.test_labels is not None
    assert not ((scene.train_labels > 0) & (scene.test_labels > 0)).any()
    share = (scene.test_labels > 0).sum() / ((scene.test_labels > 0).sum() + (scene.train_labels > 0).sum())
    assert 0.1 < share < 0.5


def test_a_class_of_one_labelled_group_is_named_when_kept_for_training(scene_dir, caplog):
    from mamol_core.config import ClassSpec
    from mamol_core.data.labels import grouped_holdout

    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:2], labels[5:7, 5:7], labels[0:2, 8:10] = 1, 1, 2
    caplog.set_level(logging.WARNING)
    train, test = grouped_holdout(labels, None, 0.5, 0, [ClassSpec(1, "Trees", "#000000"), ClassSpec(2, "Water", "#0000ff")])
    assert "class 'Water' has a single labelled group" in caplog.text and (train == 2).sum() == 4 and (test == 1).sum() == 4


def test_a_raster_without_crs_on_another_grid_trains_with_assume_crs(scene_copy):
    with rasterio.open(scene_copy / "dsm.tif") as src:
        dsm, transform = src.read(), src.transform
    with rasterio.open(scene_copy / "dsm.tif", "w", driver="GTiff", width=20, height=20, count=1, dtype="float32",
                       transform=transform @ Affine.scale(2)) as dst:  # 4 m, no CRS
        dst.write(dsm.reshape(1, 20, 2, 20, 2).mean((2, 4)).astype(np.float32))
    with pytest.raises(MamolError, match="has no CRS; assign the one it is in"):
        open_scene(scene_copy)
    with pytest.raises(MamolError, match="--assume-crs EPSG:4326: .*dsm.tif cannot lie in it"):
        open_scene(scene_copy, assume_crs="EPSG:4326")
    scene = open_scene(scene_copy, assume_crs="EPSG:32632")
    prepared, _ = prepare_scene(scene, ProtocolSpec(0.0, "both", 0), margin=0)
    assert prepared.valid.all() and scene.grid.pixel_size == (2.0, 2.0)


def test_rasters_without_a_crs_on_one_grid_take_vector_labels_with_assume_crs(scene_copy, scene_dir):
    for name in ("hsi", "dsm"):
        with rasterio.open(scene_copy / f"{name}.tif") as src:
            profile, data = {k: v for k, v in src.profile.items() if k != "crs"}, src.read()
        with rasterio.open(scene_copy / f"{name}.tif", "w", **profile) as dst:
            dst.write(data)
    labels = {"labels": scene_copy / "train_points.gpkg", "label_field": "landcover"}
    with pytest.raises(MamolError, match="the sensor rasters have no CRS"):
        open_scene(scene_copy, **labels)
    scene = open_scene(scene_copy, assume_crs="EPSG:32632", **labels)
    assert scene.grid.crs.to_epsg() == 32632
    assert np.array_equal(scene.train_labels, open_scene(scene_dir, labels=scene_dir / "train_points.gpkg", label_field="landcover").train_labels)


def test_an_input_that_names_a_scene_file_renames_that_modality(scene_dir, caplog):
    caplog.set_level(logging.INFO)
    scene = open_scene(scene_dir, parse_inputs([f"lidar={scene_dir / 'dsm.tif'}"]))
    assert sorted(scene.names) == ["hsi", "lidar"] and "instead of" not in caplog.text
    scene = open_scene(scene_dir, parse_inputs([f"dsm={scene_dir / 'hsi.tif'}"]))  # the scene's dsm.tif is left out: said so
    assert scene.names == ["dsm"] and f"--input dsm={scene_dir / 'hsi.tif'}: used for dsm instead of the scene's {scene_dir / 'dsm.tif'}" in caplog.text


@pytest.mark.parametrize("fill, declared, rows, warned", [
    (-9999.0, None, slice(0, 2), "holds -9999 at a corner"),  # a collar along the top
    (-32768, None, slice(15, 25), "holds -32768 on"),  # a void of an int16 DEM
    (-3.4028234663852886e38, None, slice(15, 25), "holds -3.40282e+38 on"),  # a void in the middle
    (3.4028234663852886e38, None, slice(15, 25), "holds 3.40282e+38 on"),  # float32's highest
    (-3.4e38, None, slice(0, 2), "holds -3.4e+38 at a corner"),  # R's raster package
    (65535, None, slice(15, 25), "holds 65535 on"),  # unsigned 16-bit's highest
    (-9999.0, -9999.0, slice(0, 2), None),  # declared: nothing to say
    (None, None, None, None)])  # no fill at all
def test_an_undeclared_fill_value_is_warned_about_when_the_scene_opens(scene_copy, caplog, fill, declared, rows, warned):
    dtype = ("uint16" if fill > 0 else "int16") if isinstance(fill, int) else "float32"
    with rasterio.open(scene_copy / "dsm.tif") as src:
        profile, data = src.profile, src.read().astype(dtype)
    if fill is not None:
        data[:, rows, :] = fill
    with rasterio.open(scene_copy / "dsm.tif", "w", **{**profile, "dtype": dtype, "nodata": declared}) as dst:
        dst.write(data)
    caplog.set_level(logging.WARNING)
    open_scene(scene_copy)
    if warned is None:
        assert "declares no nodata" not in caplog.text
    else:
        assert f"{scene_copy / 'dsm.tif'}: {warned}" in caplog.text
        assert f"declare it (gdal_edit.py -a_nodata {fill:g}" in caplog.text


@pytest.mark.parametrize("wedge, ground, warned", [
    (12, False, "a value none of its pixels sampled inside takes"), (12, True, None),
    (70, False, "only around its data"), (70, True, None),  # wedges wide enough to reach the places sampled
    ("coast", False, None), ("object", False, None)])  # the sea at 0 across two corners; one object with ground at 0 around it
def test_zero_fill_in_the_corners_of_a_reprojected_raster_is_warned_about(tmp_path, wedge, ground, warned):
    """gdalwarp without -dstnodata fills the wedges at a turned grid's corners with 0 and declares nothing; a height model
    whose ground reads 0 inside as well is left alone."""
    from mamol_core.data.plausibility import undeclared_fill

    data = np.random.default_rng(0).uniform(195, 219, (1, 160, 160)).astype(np.float32)
    r, c = np.ogrid[:160, :160]
    if wedge == "coast":
        data[:, r + 0.3 * c < 100] = 0
    elif wedge == "object":
        data[:, (r < 30) | (r > 130) | (c < 30) | (c > 130)] = 0
    else:
        data[:, (r + c < wedge) | (r + 159 - c < wedge) | (159 - r + c < wedge) | (318 - r - c < wedge)] = 0
    if ground:
        data[:, 70:90, 20:60] = 0
    write_raster(tmp_path / "dsm_3857.tif", data, Affine(1, 0, 0, 0, -1, 160))
    message = undeclared_fill(tmp_path / "dsm_3857.tif")
    if warned:
        assert message.startswith(f"{tmp_path / 'dsm_3857.tif'}: holds 0 in every band at 4 corners, {warned}, but declares no nodata;") \
            and "gdal_edit.py -a_nodata 0" in message, message
    else:
        assert message is None


def test_pixels_under_polygons_of_two_classes_are_left_unlabelled_with_a_warning(scene_dir, tmp_path, caplog):
    import geopandas
    from shapely.geometry import box

    with rasterio.open(scene_dir / "hsi.tif") as src:
        left, top, crs = src.bounds.left, src.bounds.top, src.crs
    square = lambda x0, y0, x1, y1: box(left + x0, top - y1, left + x1, top - y0)  # noqa: E731 (in metres from the corner)
    frame = geopandas.GeoDataFrame({"landcover": ["Grass", "Trees", "Grass", "Water", "Water", "Grass", "Trees", "Grass"]}, crs=crs,
                                   geometry=[square(0, 0, 20, 20), square(10, 10, 30, 30),  # Grass and Trees overlap on 10 x 10 m
                                             square(40, 0, 50, 10), square(40, 40, 60, 60), square(50, 50, 70, 70),  # Water on Water
                                             square(0, 40, 30, 70), square(4, 44, 26, 66), square(10, 50, 20, 60)])  # Grass, Trees, Grass
    caplog.set_level(logging.WARNING)
    frame.to_file(tmp_path / "polygons.gpkg")
    scene = open_scene(scene_dir, labels=tmp_path / "polygons.gpkg", label_field="landcover", holdout=0.0)
    with rasterio.open(scene_dir / "hsi.tif") as src:
        pixel = src.res[0]
    overlap = int(round(10 / pixel)) ** 2 + int(round(22 / pixel)) ** 2  # the stacked squares: Trees' whole area
    corner = (left + 10 + pixel / 2, top - 10 - pixel / 2)  # the first pixel of the overlap, row by row
    assert (f"polygons.gpkg: {overlap} pixels lie under features of different classes (Grass, Trees; e.g. at {corner[0]:.6g}, "
            f"{corner[1]:.6g}); they are left unlabelled") in caplog.text
    names = {c.value: c.name for c in scene.classes}
    row, col = int(15 / pixel), int(15 / pixel)  # inside the overlap
    assert scene.train_labels[row, col] == 0 and names[scene.train_labels[int(5 / pixel), int(5 / pixel)]] == "Grass"
    assert names[scene.train_labels[int(55 / pixel), int(55 / pixel)]] == "Water"
    assert scene.train_labels[int(55 / pixel), int(15 / pixel)] == 0  # Grass over Trees over Grass: still two classes
    assert names[scene.train_labels[int(42 / pixel), int(2 / pixel)]] == "Grass"  # the outer square's own rim


def test_points_repeated_or_outside_are_told_apart(scene_dir, tmp_path, caplog):
    import geopandas
    from shapely.geometry import Point

    with rasterio.open(scene_dir / "hsi.tif") as src:
        left, top, crs = src.bounds.left, src.bounds.top, src.crs
    at = lambda x, y: Point(left + x, top - y)  # noqa: E731 (in metres from the corner)
    points = [at(5, 5), at(5, 5), at(5, 5), at(5.2, 5.3), at(25, 25), at(-500, 25), at(45, 45)]  # three repeats, one far outside
    frame = geopandas.GeoDataFrame({"landcover": ["Grass"] * 4 + ["Trees", "Trees", "Water"]}, crs=crs, geometry=points)
    frame.to_file(tmp_path / "points.gpkg")
    caplog.set_level(logging.WARNING)
    open_scene(scene_dir, labels=tmp_path / "points.gpkg", label_field="landcover", holdout=0.0)
    assert ("points.gpkg: 3 of 7 features lie on pixels that other features label (repeated features, or points closer than a pixel), "
            "and count once there") in caplog.text
    assert "points.gpkg: 1 of 7 features lie outside the scene or cover no pixel centre, and were skipped" in caplog.text


def test_labels_in_a_file_of_several_layers_come_from_the_layer_with_the_field(scene_dir, tmp_path, caplog):
    import geopandas

    truth = geopandas.read_file(scene_dir / "train_points.gpkg")
    notes = truth[["geometry"]].assign(note="visited")
    notes.to_file(tmp_path / "project.gpkg", layer="a_notes")
    truth.to_file(tmp_path / "project.gpkg", layer="truth")
    caplog.set_level(logging.INFO)
    scene = open_scene(scene_dir, labels=tmp_path / "project.gpkg", label_field="landcover", holdout=0.0)
    assert (scene.train_labels > 0).sum() == (open_scene(scene_dir, holdout=0.0).train_labels > 0).sum()
    assert "project.gpkg: reading its layer 'truth', the one of its 2 layers with field 'landcover'" in caplog.text
    import pyogrio

    pyogrio.write_dataframe(truth.drop(columns="geometry"), tmp_path / "project.gpkg", layer="legend")  # a table: no labels there
    assert (open_scene(scene_dir, labels=tmp_path / "project.gpkg", label_field="landcover", holdout=0.0).train_labels > 0).any()
    with pytest.raises(MamolError) as error:
        open_scene(scene_dir, labels=tmp_path / "project.gpkg", label_field="class", holdout=0.0)
    assert str(error.value) == (f"{tmp_path / 'project.gpkg'}: none of its 2 layers has field 'class'; its layers and their fields are "
                                "a_notes (note); truth (landcover)")
    truth.to_file(tmp_path / "project.gpkg", layer="truth_copy")
    with pytest.raises(MamolError) as error:
        open_scene(scene_dir, labels=tmp_path / "project.gpkg", label_field="landcover", holdout=0.0)
    assert str(error.value).startswith(f"{tmp_path / 'project.gpkg'}: its layers truth, truth_copy all have field 'landcover'; "
                                       "export the one to use (ogr2ogr")


def test_a_damaged_modality_raster_is_one_line_when_a_scene_is_prepared(scene_copy):
    data = (scene_copy / "hsi.tif").read_bytes()
    (scene_copy / "hsi.tif").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MamolError, match="hsi.tif: "):
        prepare_scene(open_scene(scene_copy), ProtocolSpec(0.5, "both", 0), margin=3)


def test_class_names_match_in_any_case_unless_the_table_holds_both_cases():
    from mamol_core.data.labels import class_by_name, unknown_names_message

    table = [ClassSpec(1, "Grass", "#000000"), ClassSpec(2, "Trees", "#000000"), ClassSpec(3, "grass", "#000000")]
    code_of = class_by_name(table)
    assert [code_of(n) for n in ("Grass", "grass", "TREES", "GRASS", "Water")] == [1, 3, 2, None, None]
    assert class_by_name(table[:2])("GRASS") == 1
    message = unknown_names_message(["GRASS", "Water", "Sand"], table, "the class table", "add them", "in the field")
    assert message == ("class name 'GRASS' matches 'Grass' and 'grass' of the class table only in case; spell it as one of them in "
                       "the field; class names 'Water' and 'Sand' are not in the class table (Grass, Trees, grass); add them")


def test_a_test_class_no_training_label_has_says_the_model_cannot_learn_it(scene_dir, tmp_path):
    import geopandas

    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points[points["landcover"] != "Water"].to_file(tmp_path / "train.gpkg", driver="GPKG")
    points.to_file(tmp_path / "test.gpkg", driver="GPKG")
    with pytest.raises(MamolError, match="class name 'Water' is not in the class table .*; no training label of .*train.gpkg is of such "
                                         "a class, so the model cannot learn it"):
        open_scene(None, inputs, labels=tmp_path / "train.gpkg", label_field="landcover", test_labels=tmp_path / "test.gpkg")


def test_a_label_raster_finer_than_the_scene_that_loses_its_small_patches_is_warned_about(scene_dir, tmp_path, caplog):
    """Labels drawn 4 times finer than the scene: whole fields survive the nearest-neighbour read, but patches smaller than a
    scene pixel away from its centre are lost, which the labelled area alone did not show."""
    with rasterio.open(scene_dir / "train_labels.tif") as src:
        labels, profile, t = src.read(1), src.profile, src.transform
    fine = profile | {"width": src.width * 4, "height": src.height * 4, "transform": t @ Affine.scale(0.25), "nodata": 0}
    with rasterio.open(tmp_path / "fields.tif", "w", **fine) as dst:  # each labelled pixel as 4 x 4 fine pixels: nothing lost
        dst.write(np.kron(labels, np.ones((4, 4), labels.dtype))[None])
    patches = np.zeros((src.height * 4, src.width * 4), labels.dtype)
    rows, cols = np.nonzero(labels)
    offset = np.where(np.arange(rows.size) % 4 == 0, 2, 0)  # a quarter at the scene pixel's centre, the others in its corner
    patches[rows * 4 + offset, cols * 4 + offset] = labels[rows, cols]  # each label as a 1 x 1 fine patch
    with rasterio.open(tmp_path / "patches.tif", "w", **fine) as dst:
        dst.write(patches[None])
    caplog.set_level(logging.WARNING)
    assert np.array_equal(open_scene(scene_dir, labels=tmp_path / "fields.tif", holdout=0).train_labels, labels)
    assert "took their class" not in caplog.text
    kept = open_scene(scene_dir, labels=tmp_path / "patches.tif", holdout=0).train_labels
    assert (kept > 0).sum() == (offset == 2).sum()  # the corner patches are lost
    assert "patches.tif: only 25 % of its labelled pixels lie in scene pixels that took their class: its pixels (" in caplog.text


def test_label_rasters_off_the_scene_without_crs_or_with_an_undeclared_fill_are_warned_about_or_refused(scene_dir, tmp_path, caplog):
    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    with rasterio.open(scene_dir / "train_labels.tif") as src:
        labels, profile = src.read(1), src.profile
    caplog.set_level(logging.INFO)

    def labels_file(name: str, values: np.ndarray, **changes) -> object:
        with rasterio.open(tmp_path / name, "w", **(profile | changes)) as dst:
            dst.write(values, 1)
        return tmp_path / name

    top = np.nonzero((labels > 0).any(axis=1))[0][0]
    only_top = np.zeros_like(labels)
    only_top[top] = labels[top]
    only_top[top][only_top[top] > 0] = 7  # a class labelled only on the scene's first labelled row
    shifted = labels_file("shifted.tif", np.maximum(labels, only_top),
                          transform=profile["transform"] @ Affine.translation(0, -top - 1))  # that row falls off the top
    open_scene(None, inputs, labels=shifted)
    assert "shifted.tif: " in caplog.text and "of its labelled area lies outside the scene" in caplog.text and \
        "(all of class 7, so none of it is used)" in caplog.text

    caplog.clear()
    no_crs = labels_file("no_crs.tif", labels, crs=None)  # the scene's grid without its CRS
    read = open_scene(None, inputs, labels=no_crs)
    assert (np.maximum(read.train_labels, read.test_labels) == labels).all()
    assert "no_crs.tif: has no CRS; read on the scene grid" in caplog.text

    bare = {}
    for name, path in inputs.items():
        with rasterio.open(path) as src:
            with rasterio.open(tmp_path / f"bare_{name}.tif", "w", **(src.profile | {"crs": None})) as dst:
                dst.write(src.read())
        bare[name] = tmp_path / f"bare_{name}.tif"
    coarse = labels_file("coarse.tif", labels[::2, ::2].copy(), width=labels.shape[1] // 2, height=labels.shape[0] // 2,
                         transform=profile["transform"] @ Affine.scale(2))
    with pytest.raises(MamolError, match="coarse.tif: lies in .* on another grid than the scene's rasters, which have no CRS to warp "
                                         r"it to; give them the one they are in \(--assume-crs EPSG:XXXX\)"):
        open_scene(None, bare, labels=coarse)
    caplog.clear()
    read = open_scene(None, bare, labels=scene_dir / "train_labels.tif")  # labels with a CRS on the CRS-less rasters' grid
    assert (np.maximum(read.train_labels, read.test_labels) == labels).all()
    assert "train_labels.tif: lies in " in caplog.text and "where the scene's rasters have no CRS; read on the scene grid" in caplog.text

    caplog.clear()
    filled = labels_file("filled.tif", np.where(labels > 0, labels, 255).astype(labels.dtype), nodata=None)
    open_scene(None, inputs, labels=filled)
    assert "filled.tif: holds 255 on " in caplog.text and "declare it (gdal_edit.py -a_nodata 255 " in caplog.text
    caplog.clear()
    table = {str(v): {"name": f"class {v}", "color": "#000000"} for v in [*np.unique(labels[labels > 0]).tolist(), 255]}
    (tmp_path / "classes.json").write_text(json.dumps(table))
    open_scene(None, inputs, labels=filled, classes=tmp_path / "classes.json")  # 255 is a class the table names
    assert "holds 255" not in caplog.text
    fine = labels_file("fine.tif", np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1), width=labels.shape[1] * 2,
                       height=labels.shape[0] * 2, transform=profile["transform"] @ Affine.scale(0.5))  # dense enough, twice as fine
    open_scene(None, inputs, labels=fine)
    assert "holds 255" not in caplog.text and "outside the scene" not in caplog.text and "fine.tif: warped onto the scene grid" in caplog.text


def test_a_yes_no_field_gives_two_classes_and_code_0_features_are_counted(scene_dir, tmp_path, caplog):
    import geopandas

    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points["water"] = points["landcover"] == "Water"
    points["code"] = np.where(points["landcover"] == "Water", 0, 1 + (points["landcover"] == "Grass"))
    points.to_file(tmp_path / "labels.gpkg", driver="GPKG")
    caplog.set_level(logging.INFO)
    scene = open_scene(None, inputs, labels=tmp_path / "labels.gpkg", label_field="water")
    assert [c.name for c in scene.classes] == ["False", "True"]
    open_scene(None, inputs, labels=tmp_path / "labels.gpkg", label_field="code")
    assert f"{int(points['water'].sum())} of {len(points)} features hold code 0 in field 'code' (unlabelled) and are left out" in caplog.text


def test_label_rasters_in_any_format_gdal_reads_are_read_as_rasters(scene_dir, tmp_path):
    import pandas
    import pyogrio
    from rasterio.shutil import copy

    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    expected = open_scene(None, inputs, labels=scene_dir / "train_labels.tif", holdout=0).train_labels
    copy(scene_dir / "train_labels.tif", tmp_path / "labels.dat", driver="ENVI")  # a hyperspectral ground truth's usual format
    copy(scene_dir / "train_labels.tif", tmp_path / "labels", driver="GTiff")  # no extension
    copy(scene_dir / "train_labels.tif", tmp_path / "labels.gpkg", driver="GPKG")  # a raster GeoPackage with a legend table
    pyogrio.write_dataframe(pandas.DataFrame({"code": [1, 2], "name": ["Trees", "Grass"]}), tmp_path / "labels.gpkg", layer="legend",
                            append=True)
    for path in (tmp_path / "labels.dat", tmp_path / "labels", tmp_path / "labels.gpkg"):
        assert (open_scene(None, inputs, labels=path, holdout=0).train_labels == expected).all()
    (tmp_path / "notes.dat").write_text("not a raster")
    with pytest.raises(MamolError, match="notes.dat: cannot be read as vector data"):
        open_scene(None, inputs, labels=tmp_path / "notes.dat")


@pytest.mark.filterwarnings("ignore:'crs' was not provided")  # writing the file without one, on purpose
def test_vector_labels_and_rasters_without_a_crs_get_the_command_that_gives_one(scene_dir, tmp_path):
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points.set_crs(None, allow_override=True).to_file(tmp_path / "bare.gpkg", driver="GPKG")
    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    with pytest.raises(MamolError, match=r"bare.gpkg: has no CRS; set one so it can be placed on the scene \(ogr2ogr -a_srs EPSG:XXXX "
                                         r"bare_fixed.gpkg .*bare.gpkg\)"):
        open_scene(None, inputs, labels=tmp_path / "bare.gpkg", label_field="landcover")
    bare = {}
    for name, path in inputs.items():
        with rasterio.open(path) as src, rasterio.open(tmp_path / f"{name}.tif", "w", **(src.profile | {"crs": None})) as dst:
            dst.write(src.read())
        bare[name] = tmp_path / f"{name}.tif"
    with pytest.raises(MamolError, match=r"the sensor rasters have no CRS, so .*train_points.gpkg cannot be placed on them; give them "
                                         r"the one they are in \(--assume-crs EPSG:XXXX\)"):
        open_scene(None, bare, labels=scene_dir / "train_points.gpkg", label_field="landcover")


def test_a_finer_raster_in_degrees_than_the_grid_every_input_is_read_on_is_warned_about(scene_dir, tmp_path, caplog):
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dsm, crs, transform, bounds = src.read(1), src.crs, src.transform, src.bounds
    geo_transform, width, height = calculate_default_transform(crs, "EPSG:4326", dsm.shape[1], dsm.shape[0], *bounds)
    geographic = np.zeros((height, width), np.float32)
    reproject(dsm, geographic, src_transform=transform, src_crs=crs, dst_transform=geo_transform, dst_crs="EPSG:4326")
    with rasterio.open(tmp_path / "dsm.tif", "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:4326", transform=geo_transform) as dst:
        dst.write(geographic, 1)
    with rasterio.open(scene_dir / "hsi.tif") as src:
        cube = src.read()
    write_raster(tmp_path / "hsi.tif", cube[:, ::4, ::4].copy(), transform @ Affine.scale(4), crs=crs.to_string())  # 4 times coarser
    caplog.set_level(logging.WARNING)
    open_scene(None, {"hsi": tmp_path / "hsi.tif", "dsm": tmp_path / "dsm.tif"}, labels=scene_dir / "train_points.gpkg",
               label_field="landcover")
    assert "dsm.tif: its pixels (in EPSG:4326) are about " in caplog.text and \
        " times finer on a side than those of the grid every input is read on, " \
        "hsi.tif's" in caplog.text and "gdalwarp -t_srs EPSG:" in caplog.text and " -tr " in caplog.text
    caplog.clear()
    open_scene(None, {"hsi": scene_dir / "hsi.tif", "dsm": tmp_path / "dsm.tif"}, labels=scene_dir / "train_points.gpkg",
               label_field="landcover")
    assert "are finer than" not in caplog.text  # as fine as the projected raster


def test_polygons_partly_outside_the_scene_are_warned_about(scene_dir, tmp_path, caplog):
    import geopandas
    from shapely.geometry import box

    inputs = {"hsi": scene_dir / "hsi.tif", "dsm": scene_dir / "dsm.tif"}
    with rasterio.open(scene_dir / "hsi.tif") as src:
        left, bottom, right, top = src.bounds
        crs, size = src.crs, src.res[0]
    inside = box(left + 2 * size, bottom + 2 * size, left + 12 * size, bottom + 12 * size)
    half_out = box(right - 5 * size, top - 10 * size, right + 5 * size, top)
    geopandas.GeoDataFrame({"code": [1, 2]}, geometry=[inside, half_out], crs=crs).to_file(tmp_path / "fields.gpkg")
    caplog.set_level(logging.WARNING)
    open_scene(None, inputs, labels=tmp_path / "fields.gpkg", label_field="code", holdout=0)
    assert "fields.gpkg: 25% of its polygons' area lies outside the scene and is not used" in caplog.text, caplog.text
    caplog.clear()
    geopandas.GeoDataFrame({"code": [1, 2]}, geometry=[inside, box(right - 10 * size, top - 10 * size, right, top)],
                           crs=crs).to_file(tmp_path / "within.gpkg")
    open_scene(None, inputs, labels=tmp_path / "within.gpkg", label_field="code", holdout=0)
    assert "outside the scene" not in caplog.text
