"""End to end on a scene whose sensors disagree on grid and CRS: HSI at 2 m and LiDAR at 1 m in one
UTM zone, SAR at about 4 m in EPSG:4326, training points in EPSG:3857 and test polygons in UTM.
Training, evaluation and mapping all read it through the same aligned inputs."""

from __future__ import annotations

import json
import logging

import geopandas
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.warp import Resampling, calculate_default_transform, reproject

from conftest import CLI_FAST
from mamol_cli import evaluate, map as map_cli, train
from mamol_core.data.rasters import write_raster
from mamol_core.data.synthetic import write_scene
from mamol_core.modelfile.header import read_config


@pytest.fixture(scope="module")
def mixed_scene(tmp_path_factory):
    """The 3-sensor scene: hsi.tif (2 m), lidar.tif (1 m), sar.tif (EPSG:4326), train_points_3857.gpkg, test_polygons.gpkg."""
    folder = tmp_path_factory.mktemp("mixed")
    source = tmp_path_factory.mktemp("source")
    synthetic = write_scene(source, 40, 40, bands=6, fields=16, per_field=10, seed=5, vector=True)
    (folder / "hsi.tif").write_bytes((source / "hsi.tif").read_bytes())
    fine = synthetic.transform @ Affine.scale(0.5)
    write_raster(folder / "lidar.tif", np.repeat(np.repeat(synthetic.dsm, 2, 0), 2, 1), fine)
    backscatter = np.stack([synthetic.dsm * 0.1 + synthetic.cube[0], synthetic.cube[-1] - synthetic.cube[1]]).astype(np.float32)
    coarse = backscatter.reshape(2, 20, 2, 20, 2).mean((2, 4))
    bounds = rasterio.transform.array_bounds(40, 40, synthetic.transform)
    transform, width, height = calculate_default_transform("EPSG:32632", "EPSG:4326", 20, 20, *bounds)
    sar = np.full((2, height, width), np.nan, np.float32)
    reproject(coarse, sar, src_transform=synthetic.transform @ Affine.scale(2), src_crs="EPSG:32632", dst_transform=transform,
              dst_crs="EPSG:4326", resampling=Resampling.bilinear, dst_nodata=np.nan)
    write_raster(folder / "sar.tif", sar, transform, nodata=np.nan, crs="EPSG:4326")
    geopandas.read_file(source / "train_points.gpkg").to_crs("EPSG:3857").to_file(folder / "train_points_3857.gpkg", driver="GPKG")
    (folder / "test_polygons.gpkg").write_bytes((source / "test_polygons.gpkg").read_bytes())
    (folder / "classes.json").write_text((source / "classes.json").read_text())
    return folder


def invoke(command, *args):
    result = CliRunner().invoke(command.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_train_evaluate_and_map_a_three_sensor_scene_on_mixed_grids(mixed_scene, tmp_path, caplog):
    model = tmp_path / "model.safetensors"
    invoke(train, "--scene", mixed_scene, "--labels", mixed_scene / "train_points_3857.gpkg", "--label-field", "landcover",
           "--test-labels", mixed_scene / "test_polygons.gpkg", "--missing-rate", "0.5", "-o", model, *CLI_FAST)
    config = read_config(model)
    assert config.model.modality_names == ["hsi", "lidar", "sar"]
    assert config.model.grid.crs == "EPSG:32632" and config.model.grid.pixel_size == [1.0, 1.0]  # the finest input's grid
    trained_on = json.loads((tmp_path / "model.report" / "metrics.json").read_text())["results"]["overall"]
    assert trained_on["samples"] > 0

    report = tmp_path / "eval"
    invoke(evaluate, "--model", model, "--scene", mixed_scene, "--labels", mixed_scene / "test_polygons.gpkg",
           "--label-field", "landcover", "-o", report)
    evaluated = json.loads((report / "metrics.json").read_text())["results"]["overall"]
    assert evaluated["samples"] == trained_on["samples"] and 0 <= evaluated["oa"] <= 100

    full, sar_only = tmp_path / "full.tif", tmp_path / "sar_only.tif"
    invoke(map_cli, "--model", model, "--hsi", mixed_scene / "hsi.tif", "--lidar", mixed_scene / "lidar.tif",
           "--sar", mixed_scene / "sar.tif", "-o", full, "--device", "cpu", "--progress", "none", "--quiet")
    with rasterio.open(full) as out, rasterio.open(mixed_scene / "lidar.tif") as lidar:
        assert out.crs == lidar.crs and out.res == (1.0, 1.0)
        # the union of the inputs' extents, on the LiDAR's pixel alignment
        assert out.bounds.left <= lidar.bounds.left and out.bounds.top >= lidar.bounds.top
        assert (out.bounds.left - lidar.bounds.left) % 1 == 0
        classes = out.read(1, window=out.window(*lidar.bounds).round_offsets().round_lengths())
        assert classes.shape == (lidar.height, lidar.width) and (classes > 0).all()

    with caplog.at_level(logging.WARNING):
        invoke(map_cli, "--model", model, "--sar", mixed_scene / "sar.tif", "--reference", mixed_scene / "hsi.tif",
               "-o", sar_only, "--device", "cpu", "--progress", "none")
    assert "pixel 2 x 2, but the model was trained at 1 x 1" in caplog.text
    with rasterio.open(sar_only) as out, rasterio.open(mixed_scene / "hsi.tif") as hsi:
        assert out.crs == hsi.crs and out.res == (2.0, 2.0)
        inside_hsi = out.read(1, window=out.window(*hsi.bounds).round_offsets().round_lengths())
        assert inside_hsi.shape == (hsi.height, hsi.width) and (inside_hsi > 0).mean() > 0.9  # SAR covers the scene
