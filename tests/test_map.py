"""mamol-map end to end on small georeferenced rasters: outputs, alignment, masks, bad input, Ctrl-C."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from conftest import CLI_FAST, copy_with_config
from mamol_cli import info
from mamol_cli import map as map_cli
from mamol_cli import train
from mamol_core.config import BackboneSpec, ClassSpec, ExpertSpec, GridSpec, LayoutSpec, ProtocolSpec, TrainSpec, ValueUnit
from mamol_core.data.rasters import Grid, write_raster
from mamol_core.data.scene import open_scene
from mamol_core.errors import MamolError
from mamol_core.evaluation.predict import predict_pixels
from mamol_core.mapping.crs import check_on_earth, pixel_size_in
from mamol_core.figures import glyphs_told
from mamol_core.mapping.outputs import write_quicklook
from mamol_core.modelfile.header import read_config
from mamol_core.modelfile.weights import save_model
from mamol_core.training.fit import train_on_scene

import torch


@pytest.fixture(scope="module")
def trained(scene_dir, tmp_path_factory):
    run = train_on_scene(open_scene(scene_dir), BackboneSpec("tiny"), ExpertSpec(num_layers=2, rank=4), LayoutSpec(6, 2, 32),
                         ProtocolSpec(0.5, "both", 0), TrainSpec(epochs=25, min_steps=0, batch_size=64, lr=5e-3),
                         torch.device("cpu"), None, "none")
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(run.model, run.config, path)
    return run, path


def run_map(model, out, *inputs, extra=()):
    args = ["--model", str(model), "-o", str(out), "--device", "cpu", "--progress", "none", "--quiet", *extra]
    for name, path in inputs:
        args += ["--input", f"{name}={path}"]
    return CliRunner().invoke(map_cli.main, args)


def read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src


def test_map_writes_styled_class_raster_and_side_outputs(trained, scene_dir, tmp_path):
    _, model = trained
    out = tmp_path / "landcover.tif"
    result = run_map(model, out, ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif"),
                     extra=["--probabilities", "--confidence", "--availability"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src, rasterio.open(scene_dir / "hsi.tif") as ref:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and src.profile["tiled"] and src.compression.value == "DEFLATE"
        assert src.colormap(1)[2] == (27, 120, 55, 255)
        classes = src.read(1)
    assert set(np.unique(classes)) <= set(range(1, 7)) and classes.min() >= 1
    assert "<Category>Trees</Category>" in (tmp_path / "landcover.tif.aux.xml").read_text()
    assert 'label="Buildings"' in (tmp_path / "landcover.qml").read_text()
    assert (tmp_path / "landcover_quicklook.png").read_bytes()[:4] == b"\x89PNG"
    probabilities, profile, _ = read(tmp_path / "landcover_probabilities.tif")
    assert probabilities.shape[0] == 6 and np.abs(probabilities.sum(0).astype(int) - 100).max() <= 3
    confidence = read(tmp_path / "landcover_confidence.tif")[0][0]
    assert np.array_equal(confidence, probabilities.max(0))
    assert np.all(read(tmp_path / "landcover_availability.tif")[0] == 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "landcover.tif", "landcover.tif.aux.xml", "landcover.qml", "landcover_quicklook.png",
        "landcover_probabilities.tif", "landcover_confidence.tif", "landcover_availability.tif",
        "landcover_probabilities.qml", "landcover_confidence.qml", "landcover_availability.qml"])
    assert 'type="singlebandpseudocolor"' in (tmp_path / "landcover_confidence.qml").read_text()
    availability = (tmp_path / "landcover_availability.qml").read_text()
    assert 'value="3" color=' in availability and 'label="dsm + hsi (all)"' in availability and 'label="hsi only"' in availability


def test_side_outputs_of_an_earlier_map_are_told_apart_and_left_alone(trained, scene_dir, tmp_path, caplog):
    _, model = trained
    out, sensors = tmp_path / "landcover.tif", (("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif"))
    assert run_map(model, out, *sensors, extra=["--confidence", "--availability"]).exit_code == 0
    earlier = (tmp_path / "landcover_availability.tif").read_bytes()
    caplog.set_level(logging.WARNING)
    assert run_map(model, out, *sensors, extra=["--confidence"]).exit_code == 0
    assert f"the raster of --availability beside the map ({tmp_path / 'landcover_availability.tif'}) is from an earlier run, not " \
        "of this map; delete it, or map with --availability to write it anew" in caplog.text
    assert (tmp_path / "landcover_availability.tif").read_bytes() == earlier
    caplog.clear()
    assert run_map(model, out, *sensors, extra=["--confidence", "--availability"]).exit_code == 0
    assert "from an earlier run" not in caplog.text


def test_dense_map_agrees_with_per_pixel_classification(trained, scene_dir, tmp_path):
    run, model = trained
    out = tmp_path / "map.tif"
    assert run_map(model, out, ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    test = run.prepared.test
    complete = type(test)(test.rows, test.cols, test.targets, np.ones_like(test.presence))
    per_pixel = predict_pixels(run.model, run.sampler, complete, 512, None, "none")
    dense = read(out)[0][0][test.rows + run.prepared.window.row_off, test.cols + run.prepared.window.col_off] - 1
    assert (dense == per_pixel).mean() > 0.9


def test_one_modality_is_enough(trained, scene_dir, tmp_path):
    from mamol_core.mapping.outputs import COMBINATION_COLOURS

    _, model = trained
    out = tmp_path / "dsm_only.tif"
    assert run_map(model, out, ("dsm", scene_dir / "dsm.tif"), extra=["--availability"]).exit_code == 0
    assert (read(out)[0] > 0).all()
    assert np.all(read(tmp_path / "dsm_only_availability.tif")[0] == 1)
    legend = re.findall(r'paletteEntry value="(\d+)" color="(#[0-9a-f]{6})" alpha="255" label="([^"]+)"',
                        (tmp_path / "dsm_only_availability.qml").read_text())
    assert legend == [("1", COMBINATION_COLOURS[0], "dsm only")]  # only what a map from the dsm can hold, in its usual colour


def test_mixed_resolutions_and_crs_align_on_the_finest_grid(trained, scene_dir, tmp_path):
    _, model = trained
    with rasterio.open(scene_dir / "hsi.tif") as src:
        cube, transform, crs = src.read(), src.transform, src.crs
    coarse = cube.reshape(cube.shape[0], 20, 2, 20, 2).mean((2, 4))
    write_raster(tmp_path / "hsi_4m.tif", coarse, transform @ Affine.scale(2))
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dst_transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        dsm = np.zeros((1, height, width), np.float32)
        reproject(src.read(), dsm, src_transform=src.transform, src_crs=src.crs, dst_transform=dst_transform,
                  dst_crs="EPSG:3857", resampling=Resampling.bilinear, dst_nodata=np.nan)
    with rasterio.open(tmp_path / "dsm_3857.tif", "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:3857", transform=dst_transform, nodata=np.nan) as dst:
        dst.write(dsm)
    out = tmp_path / "mixed.tif"
    result = run_map(model, out, ("hsi", tmp_path / "hsi_4m.tif"), ("dsm", tmp_path / "dsm_3857.tif"),
                     extra=["--reference", str(tmp_path / "hsi_4m.tif"), "--availability"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        assert src.crs == crs and src.res == (4.0, 4.0)
        assert abs(src.bounds.left - transform.c) < 4.01 and abs(src.bounds.top - transform.f) < 4.01
    availability = read(tmp_path / "mixed_availability.tif")[0][0]
    assert (availability == 3).mean() > 0.8
    default = tmp_path / "finest.tif"
    assert run_map(model, default, ("hsi", tmp_path / "hsi_4m.tif"), ("dsm", tmp_path / "dsm_3857.tif")).exit_code == 0
    with rasterio.open(default) as src:
        assert src.crs.to_epsg() == 3857 and src.res[0] < 4.0


def write_y_up(source, target, pixel=1):
    """``source`` stored y-up (origin at the bottom-left corner, positive pixel height), every ``pixel``-th pixel."""
    with rasterio.open(source) as src:
        data, t, profile = src.read()[:, ::pixel, ::pixel], src.transform, src.profile
    flipped = Affine(t.a * pixel, 0, t.c, 0, -t.e * pixel, t.f + t.e * src.height)
    profile.update(transform=flipped, width=data.shape[2], height=data.shape[1], tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data[:, ::-1])


def test_rasters_stored_y_up_map_as_the_same_rasters_north_up(trained, scene_dir, tmp_path):
    """A raster whose rows run south to north (positive pixel height) covers the same area as its north-up
    twin: beside north-up rasters, alone, as the reference and at another pixel size, the map is the
    north-up one's, on a north-up grid (so its picture is not upside down)."""
    _, model = trained
    write_y_up(scene_dir / "hsi.tif", tmp_path / "hsi_up.tif")
    write_y_up(scene_dir / "dsm.tif", tmp_path / "dsm_up.tif")
    write_y_up(scene_dir / "dsm.tif", tmp_path / "dsm_up_coarse.tif", pixel=2)
    hsi, dsm = ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")
    cases = {"north_up": [hsi, dsm], "mixed": [("hsi", tmp_path / "hsi_up.tif"), dsm], "alone": [("dsm", tmp_path / "dsm_up.tif")],
             "dsm_north_up": [dsm]}
    for name, inputs in cases.items():
        assert run_map(model, tmp_path / f"{name}.tif", *inputs).exit_code == 0, name
    reference = run_map(model, tmp_path / "reference.tif", dsm, extra=["--reference", str(tmp_path / "dsm_up.tif")])
    assert reference.exit_code == 0, reference.output
    coarse = run_map(model, tmp_path / "coarse.tif", ("dsm", tmp_path / "dsm_up_coarse.tif"))
    assert coarse.exit_code == 0, coarse.output
    expected, profile, _ = read(tmp_path / "north_up.tif")
    assert np.array_equal(read(tmp_path / "mixed.tif")[0], expected) and read(tmp_path / "mixed.tif")[1]["transform"] == profile["transform"]
    alone, dsm_only = read(tmp_path / "alone.tif"), read(tmp_path / "dsm_north_up.tif")
    assert np.array_equal(alone[0], dsm_only[0]) and alone[1]["transform"] == dsm_only[1]["transform"]
    assert np.array_equal(read(tmp_path / "reference.tif")[0], dsm_only[0])
    with rasterio.open(tmp_path / "coarse.tif") as src:
        assert src.transform.e < 0 and src.res == dsm_only[2].res and src.bounds == dsm_only[2].bounds


def test_the_quicklook_draws_pixels_that_are_not_square_at_their_shape(tmp_path, caplog):
    """Pixels twice as tall as wide are drawn so; a class name the font cannot draw is one warning, not Python's per glyph."""
    classes = [ClassSpec(1, "Forêt", "#1b7837"), ClassSpec(2, "水田", "#ffcc00")]
    drawn = {}
    for name, pixel in (("square", 2), ("tall", 4)):
        write_raster(tmp_path / f"{name}.tif", np.ones((1, 300, 300), np.uint8), Affine(2, 0, 0, 0, -pixel, 0))
        with caplog.at_level(logging.WARNING), warnings.catch_warnings():
            warnings.simplefilter("error")
            write_quicklook(tmp_path / f"{name}.tif", tmp_path / f"{name}.png", classes)
        with Image.open(tmp_path / f"{name}.png") as image:
            forest = np.all(np.asarray(image.convert("RGB")) == (27, 120, 55), axis=2)
        rows = forest[:, 0]  # the map starts at the picture's left edge, the legend lies right of it
        middle = forest[rows.nonzero()[0].mean().astype(int)]
        drawn[name] = (int(rows.sum()), int(np.argmin(middle)))
    assert drawn["square"][0] == drawn["square"][1] and abs(drawn["square"][0] - 300) <= 1
    assert drawn["tall"][0] == drawn["square"][0] and abs(2 * drawn["tall"][1] - drawn["square"][1]) <= 2
    glyphs = [r.getMessage() for r in caplog.records if "cannot draw" in r.getMessage()]
    assert len(glyphs) == 2 and "水 田" in glyphs[0] and "the quick-look picture" in glyphs[0]
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()  # a layout (tight_layout) draws the text too, as the confusion-matrix picture does
    ax.set_title("水田")
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")
        with glyphs_told("a chart"):
            fig.tight_layout()
            fig.savefig(tmp_path / "chart.png")
    plt.close(fig)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["a chart"]


def test_the_grid_covers_every_input_that_overlaps_another_and_prefers_a_projected_crs(tmp_path, caplog):
    """Three sensors: the finest covers the west, a second the whole area, a third only the east (it
    overlaps the second, not the finest): all are read, on the finest one's grid over their union. A
    raster in degrees with finer ground pixels does not become the grid; one apart from all others is refused."""
    from mamol_core.mapping.align import AlignedInputs, MapInput

    west, east = Affine(1, 0, 600_000, 0, -1, 5_000_040), Affine(2, 0, 600_040, 0, -2, 5_000_040)
    write_raster(tmp_path / "fine.tif", np.ones((1, 40, 30), np.float32), west)
    write_raster(tmp_path / "whole.tif", np.ones((1, 20, 40), np.float32), Affine(2, 0, 600_000, 0, -2, 5_000_040))
    write_raster(tmp_path / "east.tif", np.ones((1, 20, 20), np.float32), east)
    inputs = [MapInput(n, tmp_path / f"{n}.tif") for n in ("fine", "whole", "east")]
    with AlignedInputs(inputs) as aligned:
        assert aligned.grid.pixel_size == (1.0, 1.0) and (aligned.grid.width, aligned.grid.height) == (80, 40)
        _, valid = aligned.read(rasterio.windows.Window(0, 0, 80, 40))
        assert valid[0, :, :30].all() and not valid[0, :, 30:].any() and valid[2, :, 40:].all() and not valid[2, :, :40].any()
    with rasterio.open(tmp_path / "whole.tif") as src:
        geographic, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width * 4, src.height * 4, *src.bounds)
    with rasterio.open(tmp_path / "degrees.tif", "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:4326", transform=geographic) as dst:
        dst.write(np.ones((1, height, width), np.float32))
    with AlignedInputs([inputs[1], MapInput("degrees", tmp_path / "degrees.tif")]) as aligned:
        assert aligned.grid.crs.to_epsg() == 32632 and aligned.grid.pixel_size == (2.0, 2.0)
    write_raster(tmp_path / "far.tif", np.ones((1, 20, 20), np.float32), Affine(2, 0, 700_000, 0, -2, 5_000_040))
    with AlignedInputs([inputs[1], MapInput("degrees", tmp_path / "degrees.tif")],
                       model_grid=GridSpec("EPSG:4326", [2e-5, 2e-5])) as aligned:  # a model trained in degrees maps in degrees
        assert aligned.grid.crs.to_epsg() == 4326 and aligned.grid.pixel_size == pytest.approx((2e-5, 2e-5))
    write_raster(tmp_path / "far.tif", np.ones((1, 20, 20), np.float32), Affine(2, 0, 700_000, 0, -2, 5_000_040))
    write_raster(tmp_path / "far_too.tif", np.ones((1, 20, 20), np.float32), Affine(2, 0, 700_020, 0, -2, 5_000_040))
    with pytest.raises(MamolError, match=r"far.tif: neither overlaps nor borders the area of fine.tif \(both EPSG:32632\); one of them may "
                                         r"have a wrong CRS: check both \(gdalinfo\)"):
        AlignedInputs([inputs[0], MapInput("far", tmp_path / "far.tif")])
    with rasterio.open(tmp_path / "fine.tif") as src:
        fine, transform = src.read(), src.transform
    write_raster(tmp_path / "mercator.tif", fine, transform, crs="EPSG:3857")  # the same numbers, declared in another CRS
    with pytest.raises(MamolError, match=r"neither overlaps nor borders the area of .*\((EPSG:3857 and EPSG:32632|EPSG:32632 and EPSG:3857)\)"):
        AlignedInputs([inputs[0], MapInput("mercator", tmp_path / "mercator.tif")])
    with pytest.raises(MamolError, match="far.tif: neither overlaps nor borders the area of fine.tif"):  # two together, apart from the rest
        AlignedInputs([*inputs, MapInput("far", tmp_path / "far.tif"), MapInput("far_too", tmp_path / "far_too.tif")])
    with pytest.raises(MamolError, match="far.tif: does not overlap any input"):
        AlignedInputs(inputs[:2], reference=tmp_path / "far.tif")
    write_raster(tmp_path / "beside.tif", np.ones((1, 40, 10), np.float32), west @ Affine.translation(30, 0))  # borders fine.tif
    with AlignedInputs([inputs[0], MapInput("beside", tmp_path / "beside.tif")]) as aligned:
        assert (aligned.grid.width, aligned.grid.height) == (40, 40)
    write_raster(tmp_path / "gap.tif", np.ones((1, 40, 10), np.float32), west @ Affine.translation(35, 0))  # 5 px east of fine.tif
    with pytest.raises(MamolError, match="gap.tif: neither overlaps nor borders the area of fine.tif"):
        AlignedInputs([inputs[0], MapInput("gap", tmp_path / "gap.tif")])
    with AlignedInputs([inputs[0], MapInput("gap", tmp_path / "gap.tif")], reference=tmp_path / "whole.tif") as aligned:
        assert aligned.grid.pixel_size == (2.0, 2.0)  # a reference over both joins them, and says so
    assert "fine.tif and gap.tif lie apart from each other and are joined only by --reference whole.tif" in caplog.text
    write_raster(tmp_path / "clipped.tif", np.ones((1, 40, 100), np.float32), west @ Affine.translation(31, 0))  # a pixel apart
    with AlignedInputs([inputs[0], MapInput("clipped", tmp_path / "clipped.tif")]) as aligned:
        assert aligned.grid.width == 131
    write_raster(tmp_path / "near.tif", np.ones((1, 40, 100), np.float32), west @ Affine.translation(32, 0))  # 2 px apart
    with pytest.raises(MamolError, match=r"near.tif: lies 2 CRS units from the area of fine.tif \(both EPSG:32632\), apart from it; to "
                                         "map both as one area, give a --reference raster that covers them"):
        AlignedInputs([inputs[0], MapInput("near", tmp_path / "near.tif")])


def test_rasters_without_a_crs_on_the_grid_of_a_model_trained_without_one_map_as_they_are(trained, scene_dir, tmp_path):
    _, model = trained
    crsless = tmp_path / "crsless.safetensors"
    copy_with_config(model, crsless, lambda config: set_grid_crs(config, None))
    inputs = []
    for name in ("hsi", "dsm"):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            profile, data = {k: v for k, v in src.profile.items() if k != "crs"}, src.read()
        with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
            dst.write(data)
        inputs.append((name, tmp_path / f"{name}.tif"))
    out = tmp_path / "map.tif"
    assert run_map(crsless, out, *inputs).exit_code == 0
    with rasterio.open(out) as src, rasterio.open(scene_dir / "hsi.tif") as ref:
        assert src.crs is None and src.transform == ref.transform and src.shape == ref.shape
    assert "has no CRS; assign the one it is in" in run_map(model, tmp_path / "other.tif", *inputs).output
    with rasterio.open(scene_dir / "hsi.tif") as src:
        write_raster(tmp_path / "mask.tif", np.ones((40, 40), np.uint8), src.transform)
    result = run_map(crsless, tmp_path / "masked.tif", *inputs, extra=["--mask", tmp_path / "mask.tif"])
    assert result.exit_code == 1 and "the input rasters have no CRS, so --mask cannot be placed on them; pass --assume-crs" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_rasters_without_any_georeferencing_train_and_map_as_they_are(scene_dir, tmp_path):
    """No CRS and no geotransform (GDAL reads pixel size 1 x 1, rows running "up"): a scene of such rasters is one
    grid of pixels, trained and mapped as it is, not turned north-up (it has no north)."""
    scene = tmp_path / "scene"
    scene.mkdir()
    for name in ("hsi", "dsm", "train_labels", "test_labels"):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            profile, data = {k: v for k, v in src.profile.items() if k not in ("crs", "transform")}, src.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rasterio's NotGeoreferencedWarning: writing no geotransform is the point
            with rasterio.open(scene / f"{name}.tif", "w", **profile) as dst:
                dst.write(data)
    shutil.copy(scene_dir / "classes.json", scene / "classes.json")
    model = tmp_path / "model.safetensors"
    trained = CliRunner().invoke(train.main, ["--scene", str(scene), "--no-eval", "-o", str(model), *CLI_FAST])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "map.tif"
    mapped = run_map(model, out, ("hsi", scene / "hsi.tif"), ("dsm", scene / "dsm.tif"))
    assert mapped.exit_code == 0, mapped.output
    with rasterio.open(out) as src, rasterio.open(scene / "hsi.tif") as ref:
        assert src.crs is None and src.transform == ref.transform and src.shape == ref.shape and (src.read(1) > 0).all()


def set_grid_crs(config, crs):
    config["model"]["grid"]["crs"] = crs
    return config


def test_partial_coverage_uses_what_is_there_and_leaves_nodata_where_nothing_is(trained, scene_dir, tmp_path):
    _, model = trained
    with rasterio.open(scene_dir / "hsi.tif") as src:
        cube, transform = src.read(), src.transform
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dsm = src.read()
    write_raster(tmp_path / "hsi_left.tif", cube[:, :, :20], transform)
    write_raster(tmp_path / "dsm_top.tif", dsm[:, :20, :], transform)
    out = tmp_path / "partial.tif"
    result = run_map(model, out, ("hsi", tmp_path / "hsi_left.tif"), ("dsm", tmp_path / "dsm_top.tif"), extra=["--availability"])
    assert result.exit_code == 0, result.output
    classes = read(out)[0][0]
    availability = read(tmp_path / "partial_availability.tif")[0][0]
    assert classes.shape == (40, 40)
    assert (classes[20:, 20:] == 0).all() and (availability[20:, 20:] == 0).all()
    assert (classes[:18, :18] > 0).all() and (availability[:18, :18] == 3).all()
    assert (availability[24:, :16] == 2).all() and (availability[:16, 24:] == 1).all()


def test_raster_smaller_than_a_tile(trained, scene_dir, tmp_path):
    _, model = trained
    with rasterio.open(scene_dir / "dsm.tif") as src:
        write_raster(tmp_path / "tiny.tif", src.read()[:, :3, :4], src.transform)
    out = tmp_path / "tiny_map.tif"
    assert run_map(model, out, ("dsm", tmp_path / "tiny.tif")).exit_code == 0
    assert read(out)[0].shape == (1, 3, 4) and (read(out)[0] > 0).all()


def expect_error(result, message, folder, before):
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(folder.iterdir()) == before


def test_bad_inputs_stop_with_one_line_and_write_nothing(trained, scene_dir, tmp_path):
    _, model = trained
    out = tmp_path / "out.tif"
    with rasterio.open(scene_dir / "hsi.tif") as src:
        cube, transform = src.read(), src.transform
    write_raster(tmp_path / "hsi5.tif", cube[:5], transform)
    write_raster(tmp_path / "far.tif", cube, transform @ Affine.translation(1000, 0))
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=40, height=40, count=8, dtype="float32",
                       transform=transform) as dst:
        dst.write(cube)
    data = (scene_dir / "hsi.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])
    (tmp_path / "fake_model.safetensors").write_bytes(b"not a model at all")
    before = sorted(tmp_path.iterdir())
    hsi, dsm = ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")
    expect_error(run_map(model, out, ("hsi", tmp_path / "hsi5.tif")), "hsi5.tif: 5 bands, but the model's hsi has 8", tmp_path, before)
    expect_error(run_map(model, out, ("sar", scene_dir / "hsi.tif")), "the model knows no modality 'sar'; it expects dsm, hsi (give it under "
                 f"the name of the sensor it holds: --input NAME={scene_dir / 'hsi.tif'}, NAME one of dsm, hsi)", tmp_path, before)
    expect_error(run_map(model, out, hsi, dsm, ("sar", tmp_path / "hsi5.tif")), "the model knows no modality 'sar'; it expects dsm, hsi "
                 "(leave it out: every modality of the model is given)", tmp_path, before)
    expect_error(run_map(model, out, hsi, ("lidar", scene_dir / "dsm.tif")), f"dsm.tif: the model knows no modality 'lidar'; it expects "
                 f"dsm, hsi (if it is its dsm raster, --input dsm={scene_dir / 'dsm.tif'})", tmp_path, before)
    expect_error(run_map(model, out, dsm, ("hsi", tmp_path / "far.tif")), "neither overlaps nor borders", tmp_path, before)
    expect_error(run_map(model, out, ("hsi", tmp_path / "nocrs.tif")), "nocrs.tif: has no CRS; assign the one it is in (the model was "
                 "trained in EPSG:", tmp_path, before)
    expect_error(run_map(model, out, ("hsi", tmp_path / "truncated.tif")), "truncated.tif: ", tmp_path, before)
    expect_error(run_map(model, tmp_path / "missing" / "o.tif", hsi), "does not exist; create it", tmp_path, before)
    expect_error(run_map(tmp_path / "fake_model.safetensors", out, hsi), "not a mamol model", tmp_path, before)
    expect_error(run_map(model, out), "no input raster given; the model expects dsm, hsi", tmp_path, before)
    with rasterio.open(tmp_path / "degrees.tif", "w", driver="GTiff", width=40, height=40, count=8, dtype="float32",
                       transform=transform, crs="EPSG:4326") as dst:  # UTM metres labelled as degrees
        dst.write(cube)
    from rasterio.control import GroundControlPoint

    corners = [GroundControlPoint(r, c, *(transform @ (c, r))) for r in (0, 40) for c in (0, 40)]
    with rasterio.open(tmp_path / "raw.tif", "w", driver="GTiff", width=40, height=40, count=8, dtype="float32", gcps=corners,
                       crs="EPSG:32632") as dst:  # placed by ground control points only, like a raw SAR scene
        dst.write(cube)
    before = sorted(tmp_path.iterdir())
    expect_error(run_map(model, out, ("hsi", tmp_path / "raw.tif")), f"{tmp_path / 'raw.tif'}: placed only by ground control points, "
                 f"on no map grid; warp it onto one first (gdalwarp -t_srs EPSG:XXXX {tmp_path / 'raw.tif'} warped.tif)", tmp_path, before)
    expect_error(run_map(model, out, ("hsi", tmp_path / "degrees.tif")),
                 "degrees.tif: its extent cannot lie in its CRS EPSG:4326 (latitudes up to 5104000 degrees, beyond ±90)", tmp_path, before)
    expect_error(run_map(model, out, ("hsi", tmp_path / "nocrs.tif"), extra=["--assume-crs", "EPSG:4326"]),
                 "--assume-crs EPSG:4326: " + str(tmp_path / "nocrs.tif") + " cannot lie in it", tmp_path, before)
    expect_error(run_map(model, out, hsi, extra=["--reference", str(tmp_path / "degrees.tif")]), "degrees.tif: its extent cannot lie",
                 tmp_path, before)
    assert run_map(model, out, ("hsi", tmp_path / "nocrs.tif"), extra=["--assume-crs", "EPSG:32632"]).exit_code == 0


def test_an_output_that_cannot_be_created_leaves_the_existing_map_as_it_was(trained, scene_dir, tmp_path, monkeypatch):
    from mamol_core.mapping import outputs

    _, model = trained
    out = tmp_path / "out.tif"
    assert run_map(model, out, ("hsi", scene_dir / "hsi.tif")).exit_code == 0
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    opened = outputs.MapWriter._open

    def refuse_probabilities(writer, path, count, nodata, kind):
        if kind == "probabilities":  # as a folder the system refuses (e.g. /proc) or a lost mount does
            raise rasterio.errors.RasterioIOError(f"Attempt to create new tiff file '{path}' failed")
        return opened(writer, path, count, nodata, kind)

    monkeypatch.setattr(outputs.MapWriter, "_open", refuse_probabilities)
    result = run_map(model, out, ("hsi", scene_dir / "hsi.tif"), extra=["--probabilities", str(tmp_path / "p.tif")])
    assert result.exit_code == 1 and "Attempt to create new tiff file" in result.output and "Traceback" not in result.output
    assert result.output.startswith(f"error: {tmp_path}: writing out.tif") and len(result.output.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before  # the map written first is untouched, no temporaries


@pytest.mark.parametrize("sig, code, message", [(signal.SIGINT, 130, "interrupted: nothing was written"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM): nothing was written")])
def test_ctrl_c_and_sigterm_leave_no_partial_output_and_the_same_command_continues(trained, tmp_path, sig, code, message):
    """Stopped, a map writes no output; its finished blocks stay in a hidden folder beside it, and the same
    command run again maps only the others, into the map an uninterrupted run makes, and removes them."""
    _, model = trained
    rng = np.random.default_rng(0)
    transform = Affine(2, 0, 664000, 0, -2, 5104000)
    write_raster(tmp_path / "big_dsm.tif", rng.normal(200, 5, (1, 480, 480)).astype(np.float32), transform)
    out = tmp_path / "map.tif"
    command = [sys.executable, "-m", "mamol_cli.map", "--model", str(model), "--input", f"dsm={tmp_path / 'big_dsm.tif'}",
               "-o", str(out), "--device", "cpu", "--progress", "json", "--block-size", "96"]
    root = os.path.dirname(os.path.dirname(__file__))
    # started with SIGINT ignored, as a script's background job is (and as pytest itself may be): it still stops on it
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    record = json.loads(process.stdout.readline())
    while record["done"] < 0.05 * record["total"]:  # a few blocks finished
        record = json.loads(process.stdout.readline())
    assert record["stage"] == "mapping" and record["done"] < record["total"]
    process.send_signal(sig)
    start = time.perf_counter()
    _, stderr = process.communicate(timeout=30)
    assert time.perf_counter() - start < 5
    assert process.returncode == code and message in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".map.tif.blocks", "big_dsm.tif"]
    assert "finished blocks are kept in" in stderr and "the same command continues from them" in stderr
    if sig != signal.SIGINT:
        return
    kept_blocks = sorted(p.name for p in (tmp_path / ".map.tif.blocks").iterdir())
    estimated = subprocess.run([*command[:-4], "--progress", "none", "--block-size", "96", "--estimate"], capture_output=True,
                               text=True, cwd=root)  # estimates only the blocks left, and touches none
    assert estimated.returncode == 0 and "the estimate covers the others" in estimated.stderr, estimated.stderr
    kept_share = re.search(r"(\d+)% of the map kept from an earlier run", estimated.stderr)
    assert kept_share and 0 < int(kept_share.group(1)) < 100, estimated.stderr
    assert sorted(p.name for p in (tmp_path / ".map.tif.blocks").iterdir()) == kept_blocks
    resumed = subprocess.run([*command[:-4], "--progress", "none", "--block-size", "96"], capture_output=True, text=True, cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing:" in resumed.stderr and f"blocks finished by an earlier run are kept, {kept_share.group(1)}% of the map (" in resumed.stderr
    assert f"{kept_share.group(0)}) in" in resumed.stderr  # its Mpx/s counts only the pixels it mapped
    assert not (tmp_path / ".map.tif.blocks").exists()
    fresh = subprocess.run([*command[:7], "-o", str(tmp_path / "fresh.tif"), "--device", "cpu", "--block-size", "96", "--quiet"],
                           capture_output=True, text=True, cwd=root)
    assert fresh.returncode == 0, fresh.stderr
    assert np.array_equal(read(out)[0], read(tmp_path / "fresh.tif")[0])


def test_multi_pixel_tokens_predict_every_pixel_on_the_input_grid(trained, scene_dir, tmp_path):
    run, model = trained
    assert run.config.model.layout.token_size > 1
    with rasterio.open(scene_dir / "hsi.tif") as src:
        cube, transform = src.read(), src.transform
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dsm = src.read()
    origin = transform @ Affine.translation(3, 5)
    write_raster(tmp_path / "hsi_odd.tif", cube[:, 5:28, 3:20], origin)
    write_raster(tmp_path / "dsm_odd.tif", dsm[:, 5:28, 3:20], origin)
    out = tmp_path / "odd.tif"
    assert run_map(model, out, ("hsi", tmp_path / "hsi_odd.tif"), ("dsm", tmp_path / "dsm_odd.tif")).exit_code == 0
    with rasterio.open(out) as src, rasterio.open(tmp_path / "hsi_odd.tif") as ref:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, (23, 17))
        assert (src.read(1) > 0).all()


def test_maps_of_overlapping_extents_agree_inside(trained, scene_dir, tmp_path, pad=5):
    """The same rasters grown by ``pad`` nodata pixels at the top and left (not a multiple of the tile
    step): the tiles lie on a lattice fixed in the CRS, so every pixel a tile away from the edges gets
    the same prediction in both maps."""
    _, model = trained
    grown = []
    for name in ("hsi", "dsm"):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            fill = src.nodata if src.nodata is not None else -9999
            array = np.full((src.count, src.height + pad, src.width + pad), fill, src.dtypes[0])
            array[:, pad:, pad:] = src.read()
            write_raster(tmp_path / f"{name}.tif", array, src.transform @ Affine.translation(-pad, -pad), nodata=fill)
        grown.append((name, tmp_path / f"{name}.tif"))
    extra = ["--probabilities", "--precision", "fp32"]
    assert run_map(model, tmp_path / "whole.tif", ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif"), extra=extra).exit_code == 0
    assert run_map(model, tmp_path / "grown.tif", *grown, extra=extra).exit_code == 0
    inner = np.s_[:, 6:-6, 6:-6]  # a tile side (6 px) inside the first map's edges
    whole, grown_map = read(tmp_path / "whole_probabilities.tif")[0], read(tmp_path / "grown_probabilities.tif")[0]
    assert grown_map.shape[1:] == (whole.shape[1] + pad, whole.shape[2] + pad)
    assert np.array_equal(whole[inner], grown_map[:, pad:, pad:][inner])


def test_tile_lattice_is_counted_from_the_crs_origin():
    from mamol_core.data.rasters import Grid
    from mamol_core.mapping.mapper import lattice_phase, plan_blocks

    utm = CRS.from_epsg(32632)
    # first pixel at column 300002 and row -2500007 of the 2 m lattice: 1 column and 2 rows to the next multiple of 3
    assert lattice_phase(Grid(utm, Affine(2, 0, 600004, 0, -2, 5000014), 50, 40), 3) == (2, 1)
    assert lattice_phase(Grid(utm, Affine(2, 0, 600003.9999999, 0, -2, 5000014.0000001), 50, 40), 3) == (2, 1)
    for x, y in [(600005, 5000015), (600004.9999999, 5000015.0000001), (600005.0000001, 5000014.9999999)]:
        assert lattice_phase(Grid(utm, Affine(2, 0, x, 0, -2, y), 50, 40), 3) == (0, 1)  # edges half a pixel off: stable
    assert lattice_phase(Grid(utm, Affine(2, 0.5, 600004, 0.5, -2, 5000014), 50, 40), 3) == (0, 0)  # rotated
    blocks = plan_blocks(100, 75, size=12, stride=12, side=48, phase=(5, 7))
    targets = np.zeros((100, 75), int)
    for b in blocks:
        t = b.target
        targets[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width] += 1
        rows = {int(b.read_window.row_off) + r for r, _ in b.origins} - {0, 88}  # all but the tiles flush with the edges
        cols = {int(b.read_window.col_off) + c for _, c in b.origins} - {0, 63}
        assert all(r % 12 == 5 and t.row_off <= r and r + 12 <= t.row_off + t.height for r in rows)  # on the lattice, in one block
        assert all(c % 12 == 7 and t.col_off <= c and c + 12 <= t.col_off + t.width for c in cols)
    assert (targets == 1).all()


def test_blocks_share_no_tile_when_tiles_lie_side_by_side():
    from mamol_core.mapping.mapper import plan_blocks

    blocks = plan_blocks(100, 75, size=12, stride=12, side=48)
    starts = [(int(b.read_window.row_off) + r, int(b.read_window.col_off) + c) for b in blocks for r, c in b.origins]
    # rows of tiles start at 0, 12, ..., 84 and 88 (flush with the edge); only the row at 88, which reaches into
    # the last block row (96-100) too, is predicted twice: once per block row, 7 tiles each
    assert len(starts) == len(set(starts)) + 7
    covered = np.zeros((100, 75), int)
    for r, c in set(starts):
        covered[r : r + 12, c : c + 12] += 1
    assert covered.min() >= 1
    targets = np.zeros((100, 75), int)
    for b in blocks:
        t = b.target
        targets[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width] += 1
    assert (targets == 1).all()


def test_background_reader_yields_the_blocks_of_the_sequential_one(trained, scene_dir):
    import threading

    from mamol_core.mapping.align import AlignedInputs, MapInput
    from mamol_core.data.reader import ModelReader
    from mamol_core.mapping.mapper import plan_blocks
    from mamol_core.mapping.prefetch import prefetched
    from mamol_core.modelfile.header import read_config

    _, model = trained
    config = read_config(model)
    inputs = [MapInput("hsi", scene_dir / "hsi.tif"), MapInput("dsm", scene_dir / "dsm.tif")]
    with AlignedInputs(inputs) as aligned:
        reader = ModelReader(config.model.modalities, aligned)
        blocks = plan_blocks(aligned.grid.height, aligned.grid.width, 6, 6, 12)
        sequential = [reader.read(b.read_window) for b in blocks]
        threads = []

        def load(block):
            threads.append(threading.current_thread().name)
            return reader.read(block.read_window)

        ahead = list(prefetched(blocks, load))
    assert len(blocks) == 16 and [b for b, _ in ahead] == blocks
    for (data, valid), (_, (data2, valid2)) in zip(sequential, ahead):
        assert np.array_equal(data, data2) and np.array_equal(valid, valid2)
    assert all(name.startswith("mamol-read") for name in threads)


def write_as_integers(source, target, scale, offset):
    """``source`` stored as int32 counts with a declared ``scale`` and ``offset`` per band; returns the
    quantity those counts stand for, computed as the reader does (float32)."""
    with rasterio.open(source) as src:
        physical, profile = src.read().astype(np.float32), src.profile
    counts = np.round((physical - offset) / scale).astype(np.int32)
    profile.update(dtype="int32", nodata=None)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(counts)
        dst.scales, dst.offsets = [scale] * src.count, [offset] * src.count
    return counts.astype(np.float32) * np.float32(scale) + np.float32(offset)


def test_declared_scale_and_offset_read_as_the_quantity_they_stand_for(trained, scene_dir, tmp_path, caplog):
    from mamol_core.data.reader import ModelReader
    from mamol_core.mapping.align import AlignedInputs, MapInput

    _, model = trained
    quantity = write_as_integers(scene_dir / "hsi.tif", tmp_path / "hsi_counts.tif", 0.001, -5.0)
    profile = read(scene_dir / "hsi.tif")[1] | {"dtype": "float32"}
    with rasterio.open(tmp_path / "hsi_float.tif", "w", **profile) as dst:
        dst.write(quantity)
    config = read_config(model)
    modalities, bands = config.model.modalities, config.model.band_slices[config.model.modality_names.index("hsi")]
    with AlignedInputs([MapInput("hsi", tmp_path / "hsi_counts.tif")]) as aligned:
        window = Window(0, 0, aligned.grid.width, aligned.grid.height)
        scaled, _ = ModelReader(modalities, aligned).read(window, normalized=False)
        for modality in modalities:
            modality.as_declared = False  # as model files of formats 2 and 3 read
        stored, _ = ModelReader(modalities, aligned).read(window, normalized=False)
    assert np.array_equal(scaled[bands], quantity)
    assert np.array_equal(stored[bands], np.round((quantity + 5.0) / 0.001))
    maps = []
    caplog.set_level(logging.INFO)
    for name in ("hsi_counts", "hsi_float"):
        caplog.clear()
        result = run_map(model, tmp_path / f"{name}_map.tif", ("hsi", tmp_path / f"{name}.tif"), ("dsm", scene_dir / "dsm.tif"))
        assert result.exit_code == 0, result.output
        maps.append(read(tmp_path / f"{name}_map.tif")[0])
        told = f"{tmp_path / name}.tif: read with its declared scale 0.001 and offset -5"
        assert (told in caplog.text) == (name == "hsi_counts") and "look unlike" not in caplog.text, caplog.text
    assert np.array_equal(maps[0], maps[1])


def test_dead_bands_are_warned_about(trained, scene_dir, tmp_path, caplog):
    """Bands that hold one value everywhere, no nodata declared, where training's varied: read as measurements, and said to be."""
    _, model = trained
    cube, profile, _ = read(scene_dir / "hsi.tif")
    cube[[3, 4]] = 0
    with rasterio.open(tmp_path / "hsi_dead.tif", "w", **(profile | {"nodata": None})) as dst:
        dst.write(cube)
    caplog.set_level(logging.WARNING)
    result = run_map(model, tmp_path / "dead.tif", ("hsi", tmp_path / "hsi_dead.tif"), ("dsm", scene_dir / "dsm.tif"))
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'hsi_dead.tif'}: bands 4, 5 hold one value (0) at every pixel sampled, where the model's training values " \
        "varied (band 4: " in caplog.text
    assert "if they hold no data, give a raster whose bands hold data, or leave hsi out (the map then comes from the other " \
        "sensors)" in caplog.text
    caplog.clear()
    from mamol_cli import evaluate

    scored = CliRunner().invoke(evaluate.main, ["--model", str(model), "--input", f"hsi={tmp_path / 'hsi_dead.tif'}", "--input",
                                                f"dsm={scene_dir / 'dsm.tif'}", "--labels", str(scene_dir / "test_labels.tif"), "-o",
                                                str(tmp_path / "eval"), "--progress", "none"])
    assert scored.exit_code == 0, scored.output
    assert f"{tmp_path / 'hsi_dead.tif'}: bands 4, 5 hold one value (0)" in caplog.text  # mamol-eval says it too
    caplog.clear()
    assert run_map(model, tmp_path / "whole.tif", ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "one value" not in caplog.text
    hsi = next(m for m in read_config(model).model.modalities if m.name == "hsi")
    cube[[3, 4]] = np.rint(np.array(hsi.mean[3:5]) + 0.5 * np.array(hsi.std[3:5]))[:, None, None]  # held at a value training took
    with rasterio.open(tmp_path / "hsi_held.tif", "w", **(profile | {"nodata": None})) as dst:
        dst.write(cube)
    assert run_map(model, tmp_path / "held.tif", ("hsi", tmp_path / "hsi_held.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "one value" not in caplog.text  # as an nDSM's ground held at 0 over the places sampled


def test_bands_in_another_order_and_a_much_coarser_raster_than_at_training_are_warned_about(scene_dir, tmp_path, caplog):
    """A model records its training rasters' band names and ground pixel size; mapping tells bands given in another order
    (with the line that restores it) and a raster of the sensor far coarser than training's."""
    cube, profile, _ = read(scene_dir / "hsi.tif")
    names = [f"{450 + 20 * b} nm" for b in range(cube.shape[0])]
    for name, order in (("hsi_named", slice(None)), ("hsi_reversed", slice(None, None, -1))):
        with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
            dst.write(cube[order])
            for band, description in enumerate(names[order], start=1):
                dst.set_band_description(band, description)
    model = tmp_path / "named.safetensors"
    trained = CliRunner().invoke(train.main, ["--input", f"hsi={tmp_path / 'hsi_named.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                              "--labels", str(scene_dir / "train_labels.tif"), "-o", str(model), "--no-eval", *CLI_FAST])
    assert trained.exit_code == 0, trained.output
    spec = {m.name: m for m in read_config(model).model.modalities}
    assert spec["hsi"].band_names == names and spec["dsm"].band_names == [] and spec["hsi"].ground_pixel == pytest.approx(2.0, rel=1e-3)
    with rasterio.open(scene_dir / "dsm.tif") as src, rasterio.open(tmp_path / "dsm_coarse.tif", "w", **(src.profile | {
            "width": src.width // 5, "height": src.height // 5, "transform": src.transform @ Affine.scale(5)})) as dst:
        dst.write(src.read(out_shape=(src.count, src.height // 5, src.width // 5), resampling=Resampling.average))
    caplog.set_level(logging.WARNING)
    assert run_map(model, tmp_path / "odd.tif", ("hsi", tmp_path / "hsi_reversed.tif"), ("dsm", tmp_path / "dsm_coarse.tif")).exit_code == 0
    reorder = " ".join(f"-b {b}" for b in range(len(names), 0, -1))
    assert f"{tmp_path / 'hsi_reversed.tif'}: its bands are those of the hsi raster the model was trained on in another order (band 1 " \
        f"is '{names[-1]}', which was band {len(names)}); the model reads bands by position, so put them in its order: gdal_translate " \
        f"{reorder} {tmp_path / 'hsi_reversed.tif'} hsi_reversed_ordered.tif" in caplog.text
    assert f"{tmp_path / 'dsm_coarse.tif'}: its pixels are about 10 m on the ground, 5.0 times those of the dsm raster the model was " \
        "trained on (2 m)" in caplog.text
    caplog.clear()
    assert run_map(model, tmp_path / "as_trained.tif", ("hsi", tmp_path / "hsi_named.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "another order" not in caplog.text and "on the ground" not in caplog.text


def test_bands_that_cover_different_areas_are_warned_about(trained, scene_dir, tmp_path, caplog):
    """A stack whose last bands hold no data on part of the scene: the sensor counts as missing there, and is said to."""
    _, model = trained
    cube, profile, _ = read(scene_dir / "hsi.tif")
    cube = cube.astype(np.float32)
    edge = int(cube.shape[1] * 0.7)
    cube[6:, edge:] = np.nan  # bands 7 and 8 end 30 % of the rows early
    with rasterio.open(tmp_path / "hsi_part.tif", "w", **(profile | {"dtype": "float32", "nodata": float("nan")})) as dst:
        dst.write(cube)
    told = f"{tmp_path / 'hsi_part.tif'}: on 3"
    said = "of the pixels read, only some of its bands hold data (bands 7, 8 hold none there), and hsi counts as missing on such pixels"
    result = run_map(model, tmp_path / "part.tif", ("hsi", tmp_path / "hsi_part.tif"), ("dsm", scene_dir / "dsm.tif"),
                     extra=["--availability", str(tmp_path / "used.tif")])
    assert result.exit_code == 0, result.output
    assert told in caplog.text and said in caplog.text, caplog.text
    used = read(tmp_path / "used.tif")[0][0]  # bit 0: dsm, bit 1: hsi (the model's order)
    assert (used[edge + 6:] == 1).all() and (used[: edge - 6] == 3).all()  # dsm alone where hsi lacks bands
    caplog.clear()
    result = CliRunner().invoke(train.main, ["--input", f"hsi={tmp_path / 'hsi_part.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "m.safetensors"),
                                             *CLI_FAST])
    assert result.exit_code == 0, result.output
    assert said in caplog.text, caplog.text
    caplog.clear()
    assert run_map(model, tmp_path / "whole.tif", ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "only some of its bands" not in caplog.text
    from mamol_core.config import ModalitySpec
    from mamol_core.data.plausibility import partial_bands
    from mamol_core.data.reader import ModelReader
    from mamol_core.mapping.align import AlignedInputs, MapInput

    with rasterio.open(tmp_path / "rgba.tif", "w", **(profile | {"count": 4, "dtype": "uint8", "nodata": None})) as dst:
        collar = np.where(np.arange(profile["width"]) < 10, 0, 255).astype(np.uint8) * np.ones((profile["height"], 1), np.uint8)
        dst.write(np.stack([*cube[:3].astype(np.uint8), collar]))  # GDAL marks the fourth band of 4 Byte bands alpha
    for as_declared in (True, False):  # the alpha band is a mask, even where an older model reads it as a band
        spec = ModalitySpec("rgb", 3 if as_declared else 4, as_declared=as_declared)
        with AlignedInputs([MapInput("rgb", tmp_path / "rgba.tif")]) as aligned:
            reader = ModelReader([spec], aligned)
            data, _ = reader.read(Window(0, 0, aligned.grid.width, aligned.grid.height), normalized=False)
            if not as_declared:  # GDAL masks the other bands by the alpha band, which it does not mask: data in 1 band of 4
                assert np.isnan(data[:3, :, :10]).all() and np.isfinite(data[3]).all()
            assert partial_bands(data, reader, {"rgb": tmp_path / "rgba.tif"}) == []


@pytest.mark.parametrize("pixel, warned", [(3.0, True), (2.0, False)])
def test_a_vrt_coarser_than_its_finest_source_is_warned_about(scene_dir, tmp_path, pixel, warned):
    """gdalbuildvrt -separate over 2 m and 4 m bands makes a 3 m VRT by default: the 2 m band is read coarser than it is."""
    from mamol_core.data.plausibility import coarser_vrt

    cube, profile, _ = read(scene_dir / "hsi.tif")
    t = profile["transform"]
    with rasterio.open(tmp_path / "fine.tif", "w", **(profile | {"count": 1})) as dst:
        dst.write(cube[0], 1)
    with rasterio.open(tmp_path / "coarse.tif", "w", **(profile | {"count": 1, "width": 20, "height": 20,
                                                                     "transform": t @ Affine.scale(2)})) as dst:
        dst.write(cube[1, ::2, ::2], 1)
    side = 40 * 2.0 / pixel
    bands = "".join(f"""<VRTRasterBand dataType="{profile['dtype'].capitalize()}" band="{i + 1}"><SimpleSource>
        <SourceFilename relativeToVRT="1">{name}</SourceFilename><SourceBand>1</SourceBand>
        <SrcRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/><DstRect xOff="0" yOff="0" xSize="{side}" ySize="{side}"/>
        </SimpleSource></VRTRasterBand>""" for i, (name, n) in enumerate((("fine.tif", 40), ("coarse.tif", 20))))
    (tmp_path / "stack.vrt").write_text(f"""<VRTDataset rasterXSize="{round(side)}" rasterYSize="{round(side)}">
        <SRS>{profile['crs'].to_wkt()}</SRS><GeoTransform>{t.c}, {pixel}, 0, {t.f}, 0, {-pixel}</GeoTransform>{bands}</VRTDataset>""")
    with rasterio.open(tmp_path / "stack.vrt") as src:
        assert src.count == 2 and src.res == (pixel, pixel)
    said = coarser_vrt(tmp_path / "stack.vrt")
    assert (said is not None) == warned
    if warned:
        assert said.startswith(f"{tmp_path / 'stack.vrt'}: a VRT of pixel 3 over sources as fine as 2 (gdalbuildvrt's default")
        assert said.endswith("build it again with -resolution highest")
    assert coarser_vrt(tmp_path / "fine.tif") is None
    from rasterio.shutil import copy
    from rasterio.vrt import WarpedVRT

    with rasterio.open(tmp_path / "fine.tif") as src, WarpedVRT(src, transform=t @ Affine.scale(2), width=20, height=20) as warped:
        copy(warped, tmp_path / "warped.vrt", driver="VRT")  # gdalwarp -of VRT -tr 4 4: coarser on purpose, and no gdalbuildvrt
    with rasterio.open(tmp_path / "warped.vrt") as src:
        assert src.res == (4.0, 4.0)
    assert "VRTWarpedDataset" in (tmp_path / "warped.vrt").read_text() and coarser_vrt(tmp_path / "warped.vrt") is None


def test_an_alpha_band_is_the_mask_it_declares_not_a_band(trained, scene_dir, tmp_path):
    _, model = trained
    with rasterio.open(scene_dir / "hsi.tif") as src:
        cube, profile = src.read(), src.profile
    alpha = np.full(cube.shape[1:], 65535, np.uint16)
    alpha[:12, :15] = 0
    cube[:, :12, :15] = 60000  # what lies under a transparent corner is no measurement
    with rasterio.open(tmp_path / "hsi_alpha.tif", "w", **(profile | {"count": 9, "nodata": None})) as dst:
        dst.write(np.concatenate([cube, alpha[None]]))
    with rasterio.open(tmp_path / "hsi_alpha.tif", "r+") as dst:  # the ninth band is alpha
        dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * 7 + [ColorInterp.alpha]
    cube[:, :12, :15] = 0  # the same corner as nodata (the sample's nodata is 0)
    with rasterio.open(tmp_path / "hsi_nodata.tif", "w", **profile) as dst:
        dst.write(cube)
    maps = []
    for name in ("hsi_alpha", "hsi_nodata"):
        out = tmp_path / f"{name}_map.tif"
        result = run_map(model, out, ("hsi", tmp_path / f"{name}.tif"), ("dsm", scene_dir / "dsm.tif"), extra=["--availability"])
        assert result.exit_code == 0, result.output
        maps.append([read(out)[0], read(tmp_path / f"{name}_map_availability.tif")[0]])
    assert np.array_equal(maps[0][0], maps[1][0]) and np.array_equal(maps[0][1], maps[1][1])
    assert len(np.unique(maps[0][1][0, :12, :15])) == 1 and len(np.unique(maps[0][1][0])) == 2  # the corner lacks hsi
    stored = tmp_path / "stored.safetensors"  # a model of format 3 reads every band's stored numbers
    copy_with_config(model, stored, lambda c: c | {"format_version": 3} | {"model": c["model"] | {
        "modalities": [{k: v for k, v in m.items() if k != "as_declared"} for m in c["model"]["modalities"]]}})
    result = run_map(stored, tmp_path / "stored_map.tif", ("hsi", tmp_path / "hsi_alpha.tif"), ("dsm", scene_dir / "dsm.tif"))
    assert result.exit_code == 1 and "hsi_alpha.tif: 9 bands, but the model's hsi has 8" in result.output, result.output
    trained_here = tmp_path / "alpha.safetensors"
    result = CliRunner().invoke(train.main, ["--input", f"hsi={tmp_path / 'hsi_alpha.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(trained_here), *CLI_FAST])
    assert result.exit_code == 0, result.output
    hsi = read_config(trained_here).model.modalities[0]
    assert (hsi.name, hsi.bands) == ("hsi", 8) and max(hsi.mean) < 10000  # reflectance x 10000; the corner's 60000 unread


@pytest.mark.parametrize("kind, opaque", [("uint8", 255), ("uint16", 65535)])
def test_an_alpha_band_masks_alike_on_the_grid_and_warped(tmp_path, kind, opaque):
    from mamol_core.config import ModalitySpec
    from mamol_core.data.rasters import Grid
    from mamol_core.data.reader import ModelReader
    from mamol_core.mapping.align import AlignedInputs, MapInput

    bands = np.full((3, 40, 40), 100, kind)
    bands[2] = opaque
    bands[2, :5], bands[2, :, 10], bands[2, :, 20] = 0, 0, opaque // 2  # transparent rows and column; a half-opaque column
    origin = Affine(1, 0, 500000, 0, -1, 5000000)
    with rasterio.open(tmp_path / "a.tif", "w", driver="GTiff", width=40, height=40, count=3, dtype=kind, crs="EPSG:32632",
                       transform=origin) as dst:
        dst.write(bands)
    with rasterio.open(tmp_path / "a.tif", "r+") as dst:
        dst.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha]
    masks = []
    for transform in (origin, origin @ Affine.translation(0, -0.0001)):  # on the grid, and warped by a hair
        with AlignedInputs([MapInput("m", tmp_path / "a.tif")], grid=Grid(CRS.from_epsg(32632), transform, 40, 40)) as aligned:
            masks.append(ModelReader([ModalitySpec("m", 2, [0.0, 0.0], [1.0, 1.0])], aligned).read(Window(0, 0, 40, 40))[1][0])
    assert np.array_equal(masks[0], masks[1])
    expected = np.ones((40, 40), bool)
    expected[:5], expected[:, 10], expected[:, 20] = False, False, False  # data only where alpha is opaque, as GDAL's warper reads it
    assert np.array_equal(masks[0], expected)


def test_a_declared_scale_that_leaves_no_measurement_is_refused(trained, scene_dir, tmp_path):
    _, model = trained
    write_as_integers(scene_dir / "hsi.tif", tmp_path / "zero.tif", 0.001, -5.0)
    with rasterio.open(tmp_path / "zero.tif", "r+") as dst:
        dst.scales = [0.001] * 7 + [0.0]
    out = tmp_path / "map.tif"
    result = run_map(model, out, ("hsi", tmp_path / "zero.tif"), ("dsm", scene_dir / "dsm.tif"))
    assert result.exit_code != 0 and not out.exists()
    assert "zero.tif: band 8 declares scale 0 and offset -5" in result.output and "gdal_edit.py -scale" in result.output
    assert "Traceback" not in result.output


def test_background_reader_raises_a_read_error_at_its_block():
    from mamol_core.errors import MamolError
    from mamol_core.mapping.prefetch import prefetched

    def load(item):
        if item == 3:
            raise MamolError("block 3 cannot be read")
        return item * 10

    seen = []
    with pytest.raises(MamolError, match="block 3"):
        for item, value in prefetched(range(6), load):
            seen.append(value)
    assert seen == [0, 10, 20]
    assert list(prefetched([], load)) == []


def test_stopping_early_waits_for_the_read_in_flight():
    import contextlib
    import threading

    from mamol_core.mapping.prefetch import prefetched

    started, finished = [], []

    def load(item):
        started.append(item)
        time.sleep(0.05)
        finished.append(item)
        return item

    with contextlib.closing(prefetched(range(10), load)) as ahead:
        for item, _ in ahead:
            if item == 2:
                break
    assert started == finished and len(started) <= 4
    assert not any(t.name.startswith("mamol-read") for t in threading.enumerate())


def test_block_side_is_a_multiple_of_the_stride():
    from conftest import tiny_config
    from mamol_core.config import MamolConfig
    from mamol_core.mapping.mapper import block_side

    config = MamolConfig(tiny_config(patch=12, token=4))
    for stride, requested in ((7, 5), (6, None), (12, 100), (5, 12)):
        side = block_side(config, stride, requested)
        assert side % stride == 0 and side >= 12 and (requested is None or side >= requested)


def test_the_map_is_at_the_models_training_pixel_size_unless_a_reference_says_otherwise(trained, scene_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run, model = trained
    grid = read_config(model).model.grid
    assert grid.crs == "EPSG:32632" and grid.pixel_size == [2.0, 2.0] == list(run.config.model.grid.pixel_size)
    described = CliRunner().invoke(info.main, [str(model)]).output
    assert "training grid: EPSG:32632, pixel 2 x 2 metre (mamol-map" in described and "dsm (1 band, pixels of 2 m)" in described
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dsm, transform = src.read(), src.transform
    write_raster(tmp_path / "dsm_1m.tif", dsm.repeat(2, axis=1).repeat(2, axis=2), transform @ Affine.scale(0.5))
    assert run_map(model, tmp_path / "default.tif", ("dsm", tmp_path / "dsm_1m.tif")).exit_code == 0
    with rasterio.open(tmp_path / "default.tif") as src:
        assert src.res == (2.0, 2.0) and (src.width, src.height) == (40, 40)
    assert "reading the inputs at the model's training pixel size 2 x 2 (the finest input has 1 x 1)" in caplog.text
    coarse = dsm.reshape(1, 20, 2, 20, 2).mean((2, 4))
    write_raster(tmp_path / "grid_4m.tif", coarse, transform @ Affine.scale(2) @ Affine.translation(0.5, 0))  # not an input
    result = run_map(model, tmp_path / "on_reference.tif", ("dsm", tmp_path / "dsm_1m.tif"), extra=["--reference", str(tmp_path / "grid_4m.tif")])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "on_reference.tif") as src:
        assert src.res == (4.0, 4.0) and (src.transform.c - transform.c) % 4 == 2
    assert "pixel 4 x 4, but the model was trained at 2 x 2" in caplog.text


def test_the_training_pixel_size_is_the_same_ground_size_in_another_crs():
    from rasterio.warp import transform

    spec = GridSpec("EPSG:32632", [2.0, 3.0])
    assert pixel_size_in(spec, CRS.from_epsg(32632), (0, 0)) == (2.0, 3.0)  # its own CRS: as recorded
    assert pixel_size_in(spec, CRS.from_epsg(32633)) == (2.0, 3.0)  # without a place: by the units alone
    feet = pixel_size_in(spec, CRS.from_epsg(2263))  # NAD83 / New York Long Island (US survey feet)
    assert abs(feet[0] - 2 / 0.3048006096) < 1e-6
    assert pixel_size_in(spec, CRS.from_epsg(4326)) is None
    assert pixel_size_in(GridSpec("EPSG:4326", [0.001, 0.001]), CRS.from_epsg(4258)) == (0.001, 0.001)
    xs, ys = transform("EPSG:4326", "EPSG:3857", [11.0], [46.0])
    mercator = pixel_size_in(spec, CRS.from_epsg(3857), (xs[0], ys[0]))  # Web Mercator stretches by 1 / cos(latitude)
    assert mercator == pytest.approx((2 / np.cos(np.radians(46)), 3 / np.cos(np.radians(46))), rel=0.005)
    degrees = pixel_size_in(spec, CRS.from_epsg(4326), (11.0, 46.0))
    assert degrees == pytest.approx((2 / (111_320 * np.cos(np.radians(46))), 3 / 111_150), rel=0.005)
    assert pixel_size_in(spec, CRS.from_epsg(4326), (191.0, 46.0)) == pytest.approx(degrees, rel=0.005)  # past 180 degrees east
    xs, ys = transform("EPSG:4326", "EPSG:25832", [9.0], [50.0])  # the same projection on another datum
    assert pixel_size_in(spec, CRS.from_epsg(25832), (xs[0], ys[0])) == pytest.approx((2.0, 3.0), rel=1e-6)
    xs, ys = transform("EPSG:4326", "EPSG:2263", [-74.0], [40.7])  # far from UTM zone 32: its nominal metres, in US feet
    assert pixel_size_in(spec, CRS.from_epsg(2263), (xs[0], ys[0])) == pytest.approx((2 / 0.3048006096, 3 / 0.3048006096), rel=0.001)
    xs, ys = transform("EPSG:4326", "ESRI:54008", [20.0], [60.0])  # sinusoidal: not conformal, its y axis slanted there
    sinusoidal = pixel_size_in(GridSpec("EPSG:32634", [2.0, 2.0]), CRS.from_string("ESRI:54008"), (xs[0], ys[0]))
    assert sinusoidal[0] == pytest.approx(2.0, rel=0.002) and sinusoidal[1] == pytest.approx(1.914, rel=0.002)
    xs, ys = transform("EPSG:4326", "EPSG:32632", [11.0], [46.0])  # a model trained in degrees, mapped in metres
    assert pixel_size_in(GridSpec("EPSG:4326", [2e-5, 2e-5]), CRS.from_epsg(32632), (xs[0], ys[0])) == pytest.approx(
        (2e-5 * 111_320 * np.cos(np.radians(46)), 2e-5 * 111_150), rel=0.005)


def test_a_raster_in_web_mercator_alone_is_mapped_at_the_training_ground_size(trained, scene_dir, tmp_path):
    _, model = trained
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dst_transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        dsm = np.zeros((1, height, width), np.float32)
        reproject(src.read(), dsm, src_transform=src.transform, src_crs=src.crs, dst_transform=dst_transform,
                  dst_crs="EPSG:3857", resampling=Resampling.bilinear)
        write_raster(tmp_path / "dsm_3857.tif", dsm, dst_transform, crs="EPSG:3857")
        lat = rasterio.warp.transform(src.crs, "EPSG:4326", [(src.bounds.left + src.bounds.right) / 2],
                                      [(src.bounds.top + src.bounds.bottom) / 2])[1][0]
    assert run_map(model, tmp_path / "map.tif", ("dsm", tmp_path / "dsm_3857.tif")).exit_code == 0
    with rasterio.open(tmp_path / "map.tif") as out:
        assert out.crs.to_epsg() == 3857 and out.res == pytest.approx((2 / np.cos(np.radians(lat)),) * 2, rel=0.01)


def test_cog_outputs_hold_the_same_pixels_colours_and_tags(trained, scene_dir, tmp_path):
    _, model = trained
    inputs = (("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif"))
    assert run_map(model, tmp_path / "tiled.tif", *inputs, extra=["--probabilities"]).exit_code == 0
    result = run_map(model, tmp_path / "cog.tif", *inputs, extra=["--probabilities", "--cog"])
    assert result.exit_code == 0, result.output
    for tiled, cog in (("tiled.tif", "cog.tif"), ("tiled_probabilities.tif", "cog_probabilities.tif")):
        with rasterio.open(tmp_path / tiled) as a, rasterio.open(tmp_path / cog) as b:
            assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and "LAYOUT" not in a.tags(ns="IMAGE_STRUCTURE")
            assert np.array_equal(a.read(), b.read()) and a.tags() == b.tags() and (a.crs, a.transform) == (b.crs, b.transform)
            assert a.descriptions == b.descriptions and a.nodata == b.nodata
    with rasterio.open(tmp_path / "cog.tif") as src:
        assert src.colormap(1)[2] == (27, 120, 55, 255)
    assert not list(tmp_path.glob(".*"))


def test_a_large_cog_gets_overviews_of_the_majority_class(tmp_path):
    from mamol_core.mapping.outputs import to_cog

    classes = np.repeat(np.repeat(np.array([[1, 2], [3, 4]], np.uint8), 300, 0), 300, 1)
    path = tmp_path / "classes.tif"
    write_raster(path, classes, Affine(2, 0, 600000, 0, -2, 5000000), nodata=0)
    to_cog(path, "MODE")
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.overviews(1) == [2, 4]
        overview = src.read(1, out_shape=(300, 300))
    assert np.array_equal(overview, classes[::2, ::2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.tif"]


def test_an_area_of_interest_or_mask_maps_only_there_with_the_whole_maps_predictions(trained, scene_dir, tmp_path):
    import geopandas
    from shapely.geometry import Polygon

    _, model = trained
    inputs = (("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif"))
    assert run_map(model, tmp_path / "full.tif", *inputs, extra=["--block-size", "12"]).exit_code == 0
    with rasterio.open(scene_dir / "hsi.tif") as src:
        b, crs = src.bounds, src.crs
    triangle = Polygon([(b.left + 20, b.bottom + 20), (b.left + 60, b.top - 10), (b.right - 10, b.bottom + 30)])
    geopandas.GeoDataFrame({"id": [1]}, geometry=[triangle], crs=crs).to_crs("EPSG:4326").to_file(tmp_path / "aoi.gpkg")
    result = run_map(model, tmp_path / "aoi.tif", *inputs, extra=["--aoi", tmp_path / "aoi.gpkg", "--availability"])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "aoi.tif") as aoi, rasterio.open(tmp_path / "full.tif") as full:
        mapped = aoi.read(1)
        whole = full.read(1, window=full.window(*aoi.bounds).round_offsets().round_lengths())
        inside = rasterio.features.geometry_mask([triangle], aoi.shape, aoi.transform, invert=True)
        assert aoi.res == full.res and aoi.width < full.width
    assert (mapped[inside] > 0).all() and np.array_equal(mapped[inside], whole[inside])
    assert (mapped[~inside] == 0).mean() > 0.95  # outside (up to pixels the reprojected polygon's edge adds)
    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 20:35] = 1
    with rasterio.open(scene_dir / "hsi.tif") as src:
        write_raster(tmp_path / "mask.tif", mask, src.transform, nodata=None)
    assert run_map(model, tmp_path / "masked.tif", *inputs, extra=["--mask", tmp_path / "mask.tif"]).exit_code == 0
    with rasterio.open(tmp_path / "masked.tif") as out:
        assert (out.read(1) > 0).sum() == mask.sum()
    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points.to_file(tmp_path / "points.gpkg")
    result = run_map(model, tmp_path / "x.tif", *inputs, extra=["--aoi", tmp_path / "points.gpkg"])
    assert result.exit_code == 1 and "--aoi needs polygons (it holds Point)" in result.output
    geopandas.read_file(tmp_path / "aoi.gpkg").to_file(tmp_path / "points.gpkg", layer="area")  # a project file: points and the area
    result = run_map(model, tmp_path / "project.tif", *inputs, extra=["--aoi", tmp_path / "points.gpkg"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(read(tmp_path / "project.tif")[0], read(tmp_path / "aoi.tif")[0])
    geopandas.read_file(tmp_path / "aoi.gpkg").to_file(tmp_path / "points.gpkg", layer="area_again")
    result = run_map(model, tmp_path / "x.tif", *inputs, extra=["--aoi", tmp_path / "points.gpkg"])
    assert result.exit_code == 1 and f"error: {tmp_path / 'points.gpkg'}: holds 3 layers (points (Point), area (Polygon), area_again " \
        "(Polygon)) and more than one layer of polygons; export the area to map alone (ogr2ogr" in result.output, result.output
    far = geopandas.GeoDataFrame({"id": [1]}, geometry=[Polygon([(0, 0), (1, 0), (1, 1)])], crs="EPSG:4326")
    far.to_file(tmp_path / "far.gpkg")
    result = run_map(model, tmp_path / "x.tif", *inputs, extra=["--aoi", tmp_path / "far.gpkg"])
    assert result.exit_code == 1 and f"{tmp_path / 'far.gpkg'}: does not overlap the input rasters; give an area" in result.output
    geopandas.GeoDataFrame({"id": [1]}, geometry=[triangle], crs="EPSG:4326").to_file(tmp_path / "degrees.gpkg")  # metres as degrees
    result = run_map(model, tmp_path / "x.tif", *inputs, extra=["--aoi", tmp_path / "degrees.gpkg"])
    assert result.exit_code == 1 and f"{tmp_path / 'degrees.gpkg'}: its extent cannot lie in its CRS EPSG:4326" in result.output \
        and f"(ogr2ogr -a_srs EPSG:XXXX degrees_fixed.gpkg {tmp_path / 'degrees.gpkg'})" in result.output, result.output
    world = Affine(0.25, 0, -180.125, 0, -0.25, 90.125)  # a global grid of pixel-centred cells: edges half a pixel past the poles
    write_raster(tmp_path / "world.tif", np.ones((721, 1441), np.uint8), world, crs="EPSG:4326")
    result = run_map(model, tmp_path / "world_map.tif", *inputs, extra=["--mask", tmp_path / "world.tif"])
    assert result.exit_code == 0 and np.array_equal(read(tmp_path / "world_map.tif")[0], read(tmp_path / "full.tif")[0]), result.output  # the world over the scene: all of it
    with rasterio.open(tmp_path / "mask.tif", "r+") as wrong:
        wrong.crs = "EPSG:4326"
    result = run_map(model, tmp_path / "x.tif", *inputs, extra=["--mask", tmp_path / "mask.tif"])
    assert result.exit_code == 1 and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert f"{tmp_path / 'mask.tif'}: its extent cannot lie in its CRS EPSG:4326" in result.output, result.output
    assert not (tmp_path / "x.tif").exists()
    with rasterio.open(scene_dir / "dsm.tif") as src:
        holed = src.read().astype(np.float32)
        holed[:, :, 18:] = np.nan
        write_raster(tmp_path / "dsm_west.tif", holed, src.transform, nodata=np.nan)
    geopandas.GeoDataFrame({"id": [1]}, geometry=[Polygon([(b.right - 30, b.bottom + 5), (b.right - 5, b.bottom + 5),
                                                           (b.right - 5, b.top - 5)])], crs=crs).to_file(tmp_path / "east.gpkg")
    result = run_map(model, tmp_path / "x.tif", ("dsm", tmp_path / "dsm_west.tif"), extra=["--aoi", tmp_path / "east.gpkg"])
    assert result.exit_code == 1 and "no pixel inside --aoi holds valid data" in result.output and "that --aoi lies where" in result.output
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("epsg", [4326, 3857, 32632, 4087])
def test_polygon_areas_are_square_metres_in_any_crs(tmp_path, epsg):
    """A 20 x 10 patch of one class near Trento covers the same ground whatever the map's CRS: its polygon's
    area is that ground in m² (not square degrees, nor the inflated metres of Web Mercator or the equidistant cylindrical)."""
    import geopandas
    from pyproj import Geod
    from shapely.geometry import box

    from mamol_core.mapping.outputs import polygon_frame

    ground = geopandas.GeoSeries([box(11.0, 46.0, 11.002, 46.001)], crs=4326).to_crs(epsg)
    west, south, east, north = ground.total_bounds
    classes = np.zeros((1, 12, 22), np.uint8)
    classes[0, 1:11, 1:21] = 3
    transform = Affine((east - west) / 20, 0, west - (east - west) / 20, 0, -(north - south) / 10, north + (north - south) / 10)
    write_raster(tmp_path / "classes.tif", classes, transform, crs=f"EPSG:{epsg}", nodata=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no geopandas warning about areas in a geographic CRS
        polygons = polygon_frame(tmp_path / "classes.tif", [ClassSpec(3, "Water", "#0000ff")])
    patch = geopandas.GeoSeries([box(west, south, east, north).segmentize((east - west) / 50)], crs=epsg).to_crs(4326)
    area = Geod(ellps="WGS84").geometry_area_perimeter(patch.iloc[0])[0]
    assert list(polygons["name"]) == ["Water"] and polygons["area"].iloc[0] == pytest.approx(abs(area), rel=0.01)


def test_a_sensor_no_tile_can_use_is_named_with_both_causes(trained, scene_dir, tmp_path, caplog):
    """A valid 2 x 2 crop of the cube reaches --min-valid in no 6 x 6 tile: the map is made from the DSM,
    and the warning does not call the crop's valid pixels nodata."""
    _, model = trained
    with rasterio.open(scene_dir / "hsi.tif") as src:
        crop = src.read(window=Window(10, 10, 2, 2))
        write_raster(tmp_path / "hsi_crop.tif", crop, src.window_transform(Window(10, 10, 2, 2)), nodata=0)
    assert (crop > 0).all()
    with caplog.at_level(logging.WARNING):
        result = run_map(model, tmp_path / "x.tif", ("dsm", scene_dir / "dsm.tif"), ("hsi", tmp_path / "hsi_crop.tif"))
    assert result.exit_code == 0, result.output
    assert "hsi_crop.tif: no tile of the map holds enough valid pixels of this hsi raster (it is all nodata, or valid on " \
           "less than --min-valid of every tile" in caplog.text


def test_sieve_polygons_and_estimate(trained, scene_dir, tmp_path, caplog):
    import geopandas
    from rasterio.features import shapes

    _, model = trained
    inputs = (("dsm", scene_dir / "dsm.tif"),)  # one sensor: a noisier map with small patches
    assert run_map(model, tmp_path / "raw.tif", *inputs).exit_code == 0
    result = run_map(model, tmp_path / "sieved.tif", *inputs, extra=["--sieve", "6", "--polygons", tmp_path / "sieved.gpkg"])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "raw.tif") as raw, rasterio.open(tmp_path / "sieved.tif") as sieved:
        before, after = raw.read(1), sieved.read(1)
    sizes = lambda array: [int(round(geometry_area)) for geometry_area in  # noqa: E731
                           (shape_area(g) for g, _ in shapes(array, connectivity=4))]
    assert min(sizes(before)) < 6 <= min(sizes(after)) and (before != after).any()
    polygons = geopandas.read_file(tmp_path / "sieved.gpkg")
    assert set(polygons["name"]) <= {"Grass", "Trees", "Bare soil", "Buildings", "Water", "Road"}
    assert polygons["area"].sum() == pytest.approx((after > 0).sum() * 4)  # 2 m pixels
    with caplog.at_level(logging.WARNING):
        estimated = CliRunner().invoke(map_cli.main, ["--model", str(model), "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o",
                                                      str(tmp_path / "never.tif"), "--estimate", "--device", "cpu", "--progress", "none"])
    assert estimated.exit_code == 0 and not (tmp_path / "never.tif").exists()
    assert "estimate: 40x40 px, " in caplog.text and "nothing was written" in caplog.text
    bad = run_map(model, tmp_path / "x.tif", *inputs, extra=["--polygons", tmp_path / "x.shp"])
    assert bad.exit_code == 1 and "write polygons to a GeoPackage (.gpkg) or GeoJSON (.geojson) file" in bad.output


def test_polygons_replace_only_a_geopackage_of_earlier_polygons_no_program_has_open(trained, scene_dir, tmp_path):
    import sqlite3

    import geopandas
    import pyogrio
    from shapely.geometry import Point

    from mamol_core.mapping.outputs import MapWriter, OutputPaths

    _, model = trained
    inputs = (("dsm", scene_dir / "dsm.tif"),)
    earlier = tmp_path / "earlier.gpkg"  # a file of an earlier map's polygons is replaced by a layer of the same name
    for _ in range(2):
        result = run_map(model, tmp_path / "m.tif", *inputs, extra=["--polygons", earlier, "--polygons-layer", "land cover"])
        assert result.exit_code == 0, result.output
    assert list(pyogrio.list_layers(earlier)[:, 0]) == ["land cover"]
    with rasterio.open(tmp_path / "m.tif") as classes:
        mapped = (classes.read(1) > 0).sum()
    assert geopandas.read_file(earlier)["area"].sum() == pytest.approx(mapped * 4)  # 2 m pixels
    renamed = run_map(model, tmp_path / "n.tif", *inputs, extra=["--polygons", earlier, "--polygons-layer", "other"])
    assert renamed.exit_code == 1 and "holds an earlier map's polygons as the layer 'land cover' (replaced only by a layer of that " \
        "name); give the polygons a new file" in renamed.output, renamed.output
    project = tmp_path / "project.gpkg"  # a layer anyone else wrote, even of the map's name
    points = geopandas.GeoDataFrame({"class": [1, 2]}, geometry=[Point(0, 0), Point(1, 1)], crs=32632)
    points.to_file(project, layer="project", driver="GPKG")
    with sqlite3.connect(earlier) as database:  # a project QGIS saved into the earlier polygons' file
        database.execute("CREATE TABLE qgis_projects (name TEXT, content BLOB)")
    broken = tmp_path / "broken.gpkg"
    broken.write_text("not a GeoPackage")
    opened = tmp_path / "opened.gpkg"
    assert run_map(model, tmp_path / "m.tif", *inputs, extra=["--polygons", opened]).exit_code == 0
    (tmp_path / "opened.gpkg-wal").write_bytes(b"")
    for target, message in [(project, "holds data mamol-map did not write (project (features))"),
                            (earlier, "holds data mamol-map did not write (land cover (features), qgis_projects)"),
                            (broken, "is no GeoPackage that can be read (file is not a database)"),
                            (opened, "is open in another program or was left half-written (opened.gpkg-wal beside it)")]:
        before = target.read_bytes()
        refused = run_map(model, tmp_path / "n.tif", *inputs, extra=["--polygons", target])
        assert refused.exit_code == 1 and f"{target.name}: {message}; give the polygons a new file" in refused.output, refused.output
        assert target.read_bytes() == before and not (tmp_path / "n.tif").exists()
    for extra, message in [(["--polygons-layer", "x"], "--polygons-layer 'x': give a layer name, with --polygons FILE"),
                           (["--polygons", tmp_path / "new.gpkg", "--polygons-layer", "SQLite_x"], "are reserved")]:
        refused = run_map(model, tmp_path / "n.tif", *inputs, extra=extra)
        assert refused.exit_code == 1 and message in refused.output, refused.output
    # opened in another program during the run: the polygons go beside it, the file stays as it was
    grid = Grid(CRS.from_epsg(32632), Affine(2, 0, 0, 0, -2, 40), 20, 20)
    classes = [ClassSpec(1, "Grass", "#00ff00")]
    changed = tmp_path / "changed.gpkg"
    assert run_map(model, tmp_path / "m.tif", *inputs, extra=["--polygons", changed]).exit_code == 0
    before = changed.read_bytes()
    with MapWriter(OutputPaths(tmp_path / "c.tif", polygons=changed), grid, classes, ["dsm"]) as writer:
        writer.write(Window(0, 0, 20, 20), {"classes": np.ones((20, 20), np.uint8)})
        (tmp_path / "changed.gpkg-wal").write_bytes(b"")
        writer.commit()
    assert changed.read_bytes() == before and (tmp_path / "c.tif").exists()
    assert geopandas.read_file(tmp_path / "changed_2.gpkg")["area"].sum() == pytest.approx(1600)


def shape_area(geometry) -> float:
    from shapely.geometry import shape

    return shape(geometry).area


@pytest.mark.parametrize("crs, corners, refused", [
    ("EPSG:4326", [(10.9, 45.9), (11.1, 46.1)], False), ("EPSG:4326", [(0, -90), (360, 90)], False),
    ("EPSG:4326", [(-190, 10), (-170, 20)], False), ("EPSG:4807", [(10, 95), (12, 99)], False),  # grads reach 100 at the pole
    ("EPSG:4326", [(10, 89), (12, 91)], True), ("EPSG:4326", [(664000, 5103680), (664320, 5104000)], True),
    ("EPSG:32632", [(664000, 5103680), (664320, 5104000)], False), ("EPSG:32632", [(1e9, 1e9), (1.1e9, 1.1e9)], True),
    ("ESRI:54009", [(4e7, 4e7), (5e7, 5e7)], True),
    ("EPSG:4326", [(-0.125, 90.125), (359.875, 85.875)], False)])  # pixel-centred 0.25° cells reach half a cell past the pole
def test_an_extent_that_cannot_lie_in_its_crs_is_refused(crs, corners, refused, tmp_path):
    if refused:
        with pytest.raises(MamolError, match="r.tif: its extent cannot lie in its CRS"):
            check_on_earth(CRS.from_user_input(crs), corners, tmp_path / "r.tif", slack=0.125)
    else:
        check_on_earth(CRS.from_user_input(crs), corners, tmp_path / "r.tif", slack=0.125)


def test_inputs_in_another_unit_are_warned_about_where_mapped_and_evaluated(trained, scene_dir, tmp_path, caplog):
    from mamol_cli import evaluate

    _, model = trained
    scene = tmp_path / "scene"
    shutil.copytree(scene_dir, scene)
    with rasterio.open(scene_dir / "hsi.tif") as src:
        profile, cube = src.profile, src.read()
    with rasterio.open(scene / "hsi.tif", "w", **{**profile, "dtype": "float32"}) as dst:
        dst.write(cube.astype(np.float32) * 10_000)  # another scale
    caplog.set_level(logging.WARNING)
    assert run_map(model, tmp_path / "plain.tif", ("hsi", scene_dir / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "look unlike" not in caplog.text
    assert run_map(model, tmp_path / "scaled.tif", ("hsi", scene / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert f"{scene / 'hsi.tif'}: its hsi values look unlike those the model was trained on (band 1: median" in caplog.text
    assert "8 of 8 bands are off like this): another unit or scale" in caplog.text and "dsm values look unlike" not in caplog.text
    caplog.clear()
    result = CliRunner().invoke(evaluate.main, ["--model", str(model), "--scene", str(scene), "-o", str(tmp_path / "eval"),
                                                "--device", "cpu", "--progress", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "its hsi values look unlike those the model was trained on" in caplog.text
    caplog.clear()
    shutil.copy(scene_dir / "hsi.tif", scene / "hsi.tif")
    with rasterio.open(scene / "hsi.tif", "r+") as dst:  # the stored numbers of training, declared as reflectance
        dst.scales = [0.0001] * dst.count
    assert run_map(model, tmp_path / "declared.tif", ("hsi", scene / "hsi.tif"), ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "its hsi values, read with its declared scale 0.0001 and offset 0, look unlike those the model was trained on" in caplog.text
    assert f"(gdal_edit.py -scale 1 -offset 0 {scene / 'hsi.tif'} makes it read as stored)" in caplog.text


@pytest.mark.parametrize("crs, units, unit", [
    ("EPSG:32632", ("", ""), ("metre", 1.0, False)), ("EPSG:2263", ("", ""), ("US survey foot", 1200 / 3937, False)),  # from the CRS
    ("EPSG:2263", ("m", "m"), ("m", 1.0, True)), ("EPSG:32632", ("US survey foot",) * 2, ("US survey foot", 1200 / 3937, True)),
    ("EPSG:26918+8228", ("", ""), ("foot", 0.3048, False)),  # a compound CRS's vertical unit, which GDAL gives the bands: presumed
    ("EPSG:26918+8228", ("m", "m"), ("m", 1.0, True)),  # declared otherwise than the vertical CRS
    ("EPSG:2263", ("dB", "dB"), None), ("EPSG:2263", ("m", ""), None), ("EPSG:2263", ("m", "ft"), None),  # no length; not all; several
    ("EPSG:4326", ("", ""), None), (None, ("", ""), None)])  # a CRS in degrees; none
def test_the_unit_of_a_rasters_values_is_the_declared_one_else_its_crs_unit(tmp_path, crs, units, unit):
    from mamol_core.data.plausibility import values_unit

    path = tmp_path / "dsm.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=2, dtype="float32", crs=crs,
                       transform=Affine(1, 0, 1000, 0, -1, 2000)) as dst:
        dst.write(np.full((2, 8, 8), 30, np.float32))
        for band, name in enumerate(units, 1):
            dst.set_band_unit(band, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CRS
        with rasterio.open(path) as src:
            found = values_unit(src, path)
            assumed = values_unit(src, path, CRS.from_epsg(2263))
    assert found == (ValueUnit(unit[0], pytest.approx(unit[1]), unit[2]) if unit else None)
    if crs is None:  # --assume-crs
        assert assumed == ValueUnit("US survey foot", pytest.approx(1200 / 3937), False)


def test_the_unit_of_heights_is_the_vertical_one_of_a_compound_crs_else_the_projected_one():
    from mamol_core.mapping.crs import height_unit

    assert height_unit(CRS.from_user_input("EPSG:26918+8228")) == ("foot", 0.3048, True)
    assert height_unit(CRS.from_epsg(2263))[:2] == ("US survey foot", pytest.approx(1200 / 3937)) and not height_unit(CRS.from_epsg(2263))[2]
    assert height_unit(CRS.from_epsg(32632)) == ("metre", 1.0, False)
    assert height_unit(CRS.from_epsg(4326)) is None and height_unit(None) is None


def test_values_look_converted_where_their_spread_comes_clearly_nearer_trainings():
    from mamol_core.data.plausibility import looks_converted

    heights = normal(200, 10)
    assert looks_converted(heights / 0.3048, 10, 0.3048)  # feet
    assert not looks_converted(heights, 10, 0.3048)  # metres in a CRS counting in feet
    assert not looks_converted(normal(0.2, 0.1), 0.1, 0.3048)  # reflectance
    assert looks_converted(heights * 0.3048, 10, 1 / 0.3048)  # metres for a model trained on feet
    assert not looks_converted(heights[:50] / 0.3048, 10, 0.3048)  # too few pixels to say
    assert not looks_converted(normal(200, 24), 10, 0.3048)  # a hillier site in metres: not clearly feet
    normalised = np.where(np.random.default_rng(1).random(1000) < 0.7, 0.0, np.abs(normal(10, 5)))  # most ground at 0
    assert looks_converted(normalised / 0.3048, float(normalised.std()), 0.3048)
    assert not looks_converted(normalised, float(normalised.std()), 0.3048)


def test_heights_in_another_unit_than_trainings_are_warned_about_where_mapped_and_evaluated(trained, scene_dir, tmp_path, caplog):
    from mamol_cli import evaluate

    run, model = trained
    assert [m.unit for m in run.config.model.modalities] == [ValueUnit("metre", 1.0, False)] * 2  # the scene's CRS (EPSG:32632)
    scene = tmp_path / "scene"
    shutil.copytree(scene_dir, scene)
    with rasterio.open(scene / "dsm.tif", "r+") as dst:
        dst.write(dst.read() / 0.3048)  # feet, declared
        dst.set_band_unit(1, "ft")
    caplog.set_level(logging.WARNING)
    assert run_map(model, tmp_path / "map.tif", ("hsi", scene / "hsi.tif"), ("dsm", scene / "dsm.tif")).exit_code == 0
    told = (f"{scene / 'dsm.tif'}: its dsm values are in ft (declared), where the model's were in metre (presumed from its training "
            f"raster's CRS): the model reads heights or lengths 3.28 times too large; convert them (gdal_calc.py -A {scene / 'dsm.tif'} "
            f'--calc="A*0.3048" --type=Float32 --outfile={scene / "dsm_metre.tif"}, then gdal_edit.py -units metre {scene / "dsm_metre.tif"}), '
            "or, if they are "
            f"in metre already, declare that (gdal_edit.py -units metre {scene / 'dsm.tif'})")
    assert told in caplog.text and "hsi values are in" not in caplog.text
    caplog.clear()
    result = CliRunner().invoke(evaluate.main, ["--model", str(model), "--scene", str(scene), "-o", str(tmp_path / "eval"),
                                                "--device", "cpu", "--progress", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    assert told in caplog.text
    assert told in json.loads((tmp_path / "eval" / "metrics.json").read_text())["context"]["warnings"]  # the report keeps what was said
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "<h2>Warnings about the inputs</h2>" in page and "its dsm values are in ft (declared)" in page
    caplog.clear()
    with rasterio.open(scene / "dsm.tif", "r+") as dst:
        dst.write(dst.read() * 0.3048)  # metres declared as feet: the values say otherwise
    assert run_map(model, tmp_path / "metres.tif", ("dsm", scene / "dsm.tif")).exit_code == 0
    assert "values are in" not in caplog.text

    feet = CRS.from_epsg(2263)  # the sensors relabelled in a State Plane CRS, counting in US survey feet: no unit declared
    for name, scale in (("hsi", 1.0), ("dsm", 3937 / 1200)):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            profile, values = src.profile, src.read()
        with rasterio.open(tmp_path / f"{name}_ft.tif", "w", **{**profile, "dtype": "float32", "crs": feet,
                                                                "transform": Affine(3937 / 1200, 0, 1e6, 0, -3937 / 1200, 2e5)}) as dst:
            dst.write(values.astype(np.float32) * scale)
    assert run_map(model, tmp_path / "ft.tif", ("hsi", tmp_path / "hsi_ft.tif"), ("dsm", tmp_path / "dsm_ft.tif")).exit_code == 0
    assert f"{tmp_path / 'dsm_ft.tif'}: its dsm values are in US survey foot (presumed from its CRS, no unit declared; their spread fits " \
        "that), where the model's were in metre" in caplog.text and 'A*0.3048006' in caplog.text and "or, if they are" not in caplog.text
    assert "hsi values are in" not in caplog.text  # reflectance in a CRS counting in feet: no length
    with rasterio.open(tmp_path / "dsm_ft.tif") as src:
        profile, values = src.profile, src.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CRS
        with rasterio.open(tmp_path / "dsm_nocrs.tif", "w", **{**profile, "crs": None}) as dst:
            dst.write(values)
    caplog.clear()
    assert run_map(model, tmp_path / "nocrs.tif", ("dsm", tmp_path / "dsm_nocrs.tif"), extra=["--assume-crs", "EPSG:2263"]).exit_code == 0
    assert "its dsm values are in US survey foot (presumed from --assume-crs EPSG:2263, no unit declared" in caplog.text

    def declared_feet(config):
        for modality in config["model"]["modalities"]:
            if modality["name"] == "dsm":
                modality |= {"mean": [v / 0.3048 for v in modality["mean"]], "std": [v / 0.3048 for v in modality["std"]],
                             "unit": {"name": "ft", "metres": 0.3048, "declared": True}}
        return config

    feet = tmp_path / "feet.safetensors"
    copy_with_config(model, feet, declared_feet)  # a model trained on heights declared in feet
    assert "dsm (1 band, values in ft, pixels of " in CliRunner().invoke(info.main, [str(feet)]).output
    caplog.clear()
    assert run_map(feet, tmp_path / "feet_map.tif", ("dsm", scene_dir / "dsm.tif")).exit_code == 0  # metres, presumed from the CRS
    assert f"{scene_dir / 'dsm.tif'}: its dsm values are in metre (presumed from its CRS, no unit declared; their spread fits that), " \
        "where the model's were in ft (declared): the model reads heights or lengths 3.28 times too small" in caplog.text
    assert f'--calc="A*3.28084" --type=Float32 --outfile={scene_dir / "dsm_ft.tif"}, then gdal_edit.py -units ft {scene_dir / "dsm_ft.tif"})' \
        in caplog.text


def test_a_compound_crs_is_read_by_its_horizontal_part(trained, scene_dir, tmp_path, caplog):
    """A height model in a compound CRS (UTM + a vertical datum) lies on the same grid as imagery in the UTM
    CRS alone: read as it is, mapped in the horizontal CRS, named shortly."""
    _, model = trained
    shutil.copy(scene_dir / "dsm.tif", tmp_path / "dsm.tif")
    with rasterio.open(tmp_path / "dsm.tif", "r+") as dst:
        dst.crs = CRS.from_user_input("EPSG:32632+5773")  # heights above EGM96, in metres
    caplog.set_level(logging.INFO)
    assert run_map(model, tmp_path / "map.tif", ("hsi", scene_dir / "hsi.tif"), ("dsm", tmp_path / "dsm.tif")).exit_code == 0
    with rasterio.open(tmp_path / "map.tif") as out:
        assert out.crs.to_epsg() == 32632 and out.res == (2.0, 2.0)
    assert "mapping 40x40 px (EPSG:32632)" in caplog.text and "values are in" not in caplog.text and "COMPD_CS" not in caplog.text
    with rasterio.open(tmp_path / "dsm.tif") as src, rasterio.open(scene_dir / "hsi.tif") as hsi:
        from mamol_core.mapping.align import effective_grid
        from mamol_core.data.rasters import grid_of, same_grid

        assert same_grid(effective_grid(grid_of(src), None, tmp_path / "dsm.tif"), effective_grid(grid_of(hsi), None, scene_dir / "hsi.tif"))
        bare = replace(grid_of(src), crs=None)  # a raster without a CRS, given a compound one by --assume-crs
        assert effective_grid(bare, CRS.from_user_input("EPSG:32632+5773"), tmp_path / "dsm.tif").crs == CRS.from_epsg(32632)
    scene = tmp_path / "scene"
    shutil.copytree(scene_dir, scene)
    for name in ("dsm.tif", "train_labels.tif"):  # labels made from the compound DSM keep its CRS
        with rasterio.open(scene / name, "r+") as dst:
            dst.crs = CRS.from_user_input("EPSG:32632+5773")
    caplog.clear()
    assert open_scene(scene).grid.crs == CRS.from_epsg(32632)
    assert "warped" not in caplog.text and "different grids" not in caplog.text, caplog.text


def test_a_models_own_training_rasters_get_no_unit_warning(scene_dir, tmp_path, caplog):
    """Whatever unit its rasters declare or their CRS counts in, the model was trained on them."""
    from mamol_core.data.plausibility import unit_warnings
    from mamol_core.data.pixels import prepare_scene
    from mamol_core.data.reader import ModelReader
    from mamol_core.mapping.align import AlignedInputs, MapInput

    scene = tmp_path / "scene"
    shutil.copytree(scene_dir, scene)
    with rasterio.open(scene / "dsm.tif", "r+") as dst:
        dst.set_band_unit(1, "US survey foot")
    _, specs = prepare_scene(open_scene(scene), ProtocolSpec(0.0, "both", 0), margin=6)
    by_name = {spec.name: spec for spec in specs}
    assert by_name["dsm"].unit == ValueUnit("US survey foot", pytest.approx(1200 / 3937), True)
    paths = {"hsi": scene / "hsi.tif", "dsm": scene / "dsm.tif"}
    with AlignedInputs([MapInput(n, p) for n, p in paths.items()]) as aligned:
        reader = ModelReader(specs, aligned)
        data, valid = reader.read(Window(0, 0, 40, 40), normalized=False)
        assert unit_warnings(data, valid, reader, paths) == []
        by_name["dsm"].unit = ValueUnit("metre", 1.0, True)  # had it been trained on metres, declared
        assert unit_warnings(data, valid, reader, paths)[0].startswith(f"{scene / 'dsm.tif'}: its dsm values are in US survey foot "
                                                                        "(declared), where the model's were in metre (declared)")


def normal(mean, std, size=1000):
    return np.random.default_rng(0).normal(mean, std, size)


@pytest.mark.parametrize("values, training, flagged", [
    (normal(0.2, 0.1), (0.2, 0.1), False), (normal(0.25, 0.03), (0.2, 0.1), False),  # as in training; a narrower scene
    (normal(2000, 1000), (0.2, 0.1), True), (normal(0.2, 0.1) / 1e4, (0.2, 0.1), True),  # × 10 000, ÷ 10 000
    (normal(-10, 3), (0.1, 0.1), True), (np.abs(normal(0.1, 0.1)), (-12, 4), True),  # dB for linear power, and the reverse
    (np.full(1000, 0.2), (0.2, 0.1), False), (np.full(50, 9e9), (0.2, 0.1), False),  # constant; too few pixels
    (normal(400, 15), (120, 15), False),  # absolute heights of another site: another level, not another unit
    (normal(0, 0.05), (3, 6), False),  # a normalised DSM over flat water, trained where towns stand
    (normal(0.03, 0.003), (0.25, 0.1), False),  # reflectance of dark water, trained over land
    (normal(0.2, 0.1).clip(0, 0.4), (8, 5), False),  # flat fields, trained over a town
    (normal(2000, 1000).astype(np.int16), (0.2, 0.1), True)])  # integer data
def test_a_band_is_unlike_training_when_scaled_by_a_large_factor(values, training, flagged):
    from mamol_core.data.plausibility import band_mismatch

    assert (band_mismatch(values, *training) is not None) == flagged


@pytest.mark.parametrize("sensors", [2, 9, 17])
def test_blocks_count_the_pixels_of_each_sensor_combination(sensors):
    from mamol_core.mapping.outputs import COUNTED_SENSORS, OutputPaths, encode_block

    used = np.zeros((sensors, 2, 3), bool)
    used[-1, 0, :] = True  # the last sensor alone on the first row
    used[:, 1, 0] = True  # every sensor on one pixel
    block = encode_block(np.full((2, 2, 3), 0.5), used, np.array([1, 2], np.uint8), OutputPaths(Path("m.tif")))
    assert block["used_count"][-1] == 4 and block["used_count"][0] == 1
    if sensors > COUNTED_SENSORS:
        assert "combination_count" not in block  # too many combinations to count
        return
    counts = block["combination_count"]
    assert counts.size == 2**sensors and counts[0] == 2 and counts[2 ** (sensors - 1)] == 3 and counts[-1] == 1 and counts.sum() == 6


@pytest.mark.parametrize("sensors", [1, 2, 4, 5, 8])
def test_every_sensor_combination_has_a_colour_of_its_own(sensors):
    from mamol_core.mapping.outputs import availability_style

    style = availability_style([f"s{i}" for i in range(sensors)])
    colours = re.findall(r'paletteEntry value="\d+" color="(#[0-9a-f]{6})"', style)
    assert len(colours) == 2**sensors - 1 == len(set(colours))


def test_a_map_whose_every_block_an_earlier_run_finished_gives_no_rate(trained, scene_dir, tmp_path, caplog, monkeypatch):
    from mamol_core.mapping import mapper

    _, model = trained
    monkeypatch.setattr(mapper, "map_rasters", lambda *args: mapper.MapSummary(40, 40, 9, 0.2, kept_pixels=1600))
    caplog.set_level(logging.INFO)
    assert run_map(model, tmp_path / "map.tif", ("dsm", scene_dir / "dsm.tif")).exit_code == 0
    assert "(40x40 px, 9 tiles; 100% of the map kept from an earlier run) in 0.2 s\n" in caplog.text and "Mpx/s" not in caplog.text
    monkeypatch.setattr(mapper, "map_rasters", lambda *args: mapper.MapSummary(40, 40, 9, 0.0, estimated=True, kept_pixels=1600))
    assert run_map(model, tmp_path / "map.tif", ("dsm", scene_dir / "dsm.tif"), extra=["--estimate"]).exit_code == 0
    assert "100% of the map kept from an earlier run; about 0 s on cpu; nothing was written" in caplog.text and "Mpx/s" not in caplog.text


def test_the_estimate_times_the_middle_block_where_the_inputs_most_likely_overlap():
    from types import SimpleNamespace

    from mamol_core.mapping.mapper import Block, estimate_seconds

    read = []

    class Reader:
        def read(self, window):
            read.append((window.row_off, window.col_off))
            return np.zeros((1, 24, 24), np.float32), np.ones((1, 24, 24), bool)

    predictor = SimpleNamespace(size=12, batch_size=2, predict=lambda *args: None)
    for rows, cols, middle in ((5, 1, (48, 0)), (4, 4, (24, 24)), (3, 3, (24, 24))):  # listed row by row
        blocks = [Block(Window(24 * c, 24 * r, 24, 24), Window(24 * c, 24 * r, 24, 24), np.array([[0, 0], [12, 12]]))
                  for r in range(rows) for c in range(cols)]
        read.clear()
        assert estimate_seconds(blocks, Reader(), predictor, torch.device("cpu")) >= 0 and read == [middle]
