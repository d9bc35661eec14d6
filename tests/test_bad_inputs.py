"""Bad input loses nothing: outputs that would destroy an input or each other, damaged and edited model
files, unwritable report folders, rasters without one valid pixel, one-class labels, class tables
that disagree with the model, SIGTERM; each gets one line, a non-zero exit and no half-written file."""

import json
import logging
import os
import signal
import struct
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from conftest import CLI_FAST
from mamol_cli import evaluate, info, train
from mamol_cli import map as map_cli
from mamol_cli.common import interruption_message
from mamol_core.atomic import atomic_path, forget_finished
from mamol_core.config import ClassSpec, ProtocolSpec
from mamol_core.data.pixels import pixel_set
from mamol_core.data.rasters import write_raster
from mamol_core.errors import MamolError
from mamol_core.modelfile.header import read_config

FAST = CLI_FAST


def one_line_error(result, message):
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def run_map(*args):
    return CliRunner().invoke(map_cli.main, [*map(str, args), "--device", "cpu", "--progress", "none", "--quiet"])


def test_an_output_never_overwrites_an_input_or_another_output(model_file, scene_dir, tmp_path):
    dsm = tmp_path / "dsm.tif"
    dsm.write_bytes((scene_dir / "dsm.tif").read_bytes())
    before = dsm.read_bytes()
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "-o", dsm), "is the input --input dsm; writing -o there would destroy it")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "-o", tmp_path / "m.tif", "--probabilities", dsm),
                   "writing --probabilities there would destroy it")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "-o", tmp_path / "m.tif", "--probabilities", tmp_path / "m.tif"),
                   "given as both -o and --probabilities")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "-o", model_file), "is the input --model")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", tmp_path / "m.tif"),
                   "modality 'dsm' was already given by --input")
    one_line_error(run_map("--model", model_file, "--hsi", scene_dir / "hsi.tif", "--input", f"hsi={scene_dir / 'hsi.tif'}",
                           "-o", tmp_path / "m.tif"), "modality 'hsi' was already given by --hsi")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "-o", tmp_path / "m.png"),
                   "m.png: mamol-map writes GeoTIFF rasters; give the file a .tif name")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "-o", tmp_path / "m.tif", "--confidence", tmp_path / "c.img"),
                   "--confidence " + str(tmp_path / "c.img") + ": mamol-map writes GeoTIFF rasters")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={dsm}", "--input", f"hsi={dsm}", "-o", tmp_path / "m.tif"),
                   f"{dsm}: given for both dsm and hsi; pass each sensor's own raster")
    assert dsm.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["dsm.tif"]
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(scene_dir / "dsm.tif"), *FAST])
    one_line_error(result, "is the input the dsm raster; writing -o there would destroy it")


def rewrite_config(model, path, edit):
    """A copy of ``model`` whose embedded config went through ``edit`` (tensors unchanged)."""
    data = model.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    config = json.loads(header["__metadata__"]["mamol_config"])
    header["__metadata__"]["mamol_config"] = json.dumps(edit(config))
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length :])
    return path


def set_in(config, keys, value):
    target = config
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return config


@pytest.mark.parametrize("keys, value, message", [
    (["model", "modalities", 0, "mean"], [], "bands but 0 means"),
    (["model", "layout", "patch_size"], 7, "token layout"),
    (["model", "classes"], {"1": "x"}, "config.model.classes is not a list"),
    (["model", "modalities", 0, "bands"], "one", "config.model.modalities[0].bands is 'one', not int"),
    (["model", "classes", 0, "color"], "green", "not #rrggbb"),
    (["model", "experts", "rank"], 0, "expert sizes"),
    (["model", "backbone", "name"], "tiny@x", "backbone 'tiny@x': what follows '@' is how many of its first blocks to keep"),
    (["model", "modalities", 0, "unit"], {"name": "ft", "metres": 0, "declared": True}, "has a unit of 0.0 metres"),
])
def test_an_edited_model_file_gets_one_line(model_file, scene_dir, tmp_path, keys, value, message):
    edited = rewrite_config(model_file, tmp_path / "edited.safetensors", lambda c: set_in(c, keys, value))
    for result in (CliRunner().invoke(info.main, [str(edited)]),
                   run_map("--model", edited, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", tmp_path / "m.tif")):
        one_line_error(result, message)
    assert not (tmp_path / "m.tif").exists()


def test_an_edited_model_file_naming_more_blocks_than_its_backbone_has_gets_one_line(model_file, scene_dir, tmp_path):
    edited = rewrite_config(model_file, tmp_path / "edited.safetensors", lambda c: set_in(c, ["model", "backbone", "name"], "tiny@5"))
    result = run_map("--model", edited, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", tmp_path / "m.tif")
    one_line_error(result, f"{edited}: backbone 'tiny@5': tiny has 2 blocks, so keep 1 to 2")
    assert not (tmp_path / "m.tif").exists()


def test_weights_that_do_not_fit_an_edited_band_count_get_one_line(model_file, scene_dir, tmp_path):
    def more_bands(config):
        spec = next(m for m in config["model"]["modalities"] if m["name"] == "dsm")
        spec.update(bands=2, mean=spec["mean"] * 2, std=spec["std"] * 2)
        return config

    edited = rewrite_config(model_file, tmp_path / "edited.safetensors", more_bands)
    with rasterio.open(scene_dir / "dsm.tif") as src:
        write_raster(tmp_path / "dsm2.tif", np.concatenate([src.read()] * 2), src.transform)
    one_line_error(run_map("--model", edited, "--input", f"dsm={tmp_path / 'dsm2.tif'}", "-o", tmp_path / "m.tif"),
                   "its weights do not fit the network its config describes")


def test_a_truncated_or_config_less_model_file_gets_one_line(model_file, scene_dir, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_file.read_bytes()[:-100])
    one_line_error(CliRunner().invoke(info.main, [str(truncated)]), "truncated")
    one_line_error(run_map("--model", truncated, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", tmp_path / "m.tif"), "truncated")
    truncated.write_bytes(model_file.read_bytes()[:200])  # cut inside its header
    one_line_error(CliRunner().invoke(info.main, [str(truncated)]), "truncated.safetensors: truncated (200 bytes, less than its header")
    not_object = rewrite_config(model_file, tmp_path / "list.safetensors", lambda c: [c])
    one_line_error(CliRunner().invoke(info.main, [str(not_object)]), "its embedded config is not an object")


def test_a_raster_cut_short_says_what_gdal_found(model_file, scene_dir, tmp_path):
    data = (scene_dir / "dsm.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    result = run_map("--model", model_file, "--input", f"dsm={tmp_path / 'cut.tif'}", "-o", tmp_path / "m.tif")
    one_line_error(result, "cut.tif")
    assert "the file may be truncated" in result.output and "previous exception" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]
    labels = (scene_dir / "test_labels.tif").read_bytes()
    (tmp_path / "cut_labels.tif").write_bytes(labels[: len(labels) * 2 // 3])
    result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "--labels", str(tmp_path / "cut_labels.tif"),
                                                "-o", str(tmp_path / "report"), "--quiet"])
    one_line_error(result, "cut_labels.tif: reading failed")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("kind", ["complex64", "complex_int16"])  # CInt16: Sentinel-1 SLC's type
def test_complex_values_are_refused_in_training_and_mapping(model_file, scene_dir, tmp_path, kind):
    with rasterio.open(scene_dir / "dsm.tif") as src:
        heights, profile = src.read(1), src.profile
    with rasterio.open(tmp_path / "slc.tif", "w", **(profile | {"dtype": kind, "nodata": None})) as dst:
        dst.write((heights + 1j * heights).astype(np.complex64), 1)
    result = run_map("--model", model_file, "--input", f"dsm={tmp_path / 'slc.tif'}", "-o", tmp_path / "m.tif")
    one_line_error(result, f"slc.tif: holds complex values ({kind})")
    assert 'gdal_calc.py -A' in result.output and not (tmp_path / "m.tif").exists()
    result = CliRunner().invoke(train.main, ["--input", f"dsm={tmp_path / 'slc.tif'}", "--input", f"hsi={scene_dir / 'hsi.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "model.safetensors"), *FAST])
    one_line_error(result, "slc.tif: holds complex values")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slc.tif"]


def test_an_archive_or_a_gdal_virtual_path_is_refused_with_what_to_pass(model_file, scene_dir, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "dsm.zip", "w") as archive:
        archive.write(scene_dir / "dsm.tif", "dsm.tif")
    result = run_map("--model", model_file, "--input", f"dsm={tmp_path / 'dsm.zip'}", "-o", tmp_path / "m.tif")
    one_line_error(result, "dsm.zip: an archive, not a raster; unpack it and pass the raster inside")
    result = run_map("--model", model_file, "--input", f"dsm=/vsizip/{tmp_path / 'dsm.zip'}/dsm.tif", "-o", tmp_path / "m.tif")
    one_line_error(result, "GDAL virtual paths (/vsizip/, /vsicurl/, …) are not read; unzip or download the raster and pass its file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dsm.zip"]


def test_a_vrt_moved_away_from_its_sources_is_refused_naming_the_source(model_file, scene_dir, tmp_path):
    from rasterio.shutil import copy

    (tmp_path / "bands").mkdir()
    (tmp_path / "bands" / "dsm.tif").write_bytes((scene_dir / "dsm.tif").read_bytes())
    copy(tmp_path / "bands" / "dsm.tif", tmp_path / "bands" / "dsm.vrt", driver="VRT")
    assert 'relativeToVRT="1"' in (tmp_path / "bands" / "dsm.vrt").read_text()
    assert run_map("--model", model_file, "--input", f"dsm={tmp_path / 'bands' / 'dsm.vrt'}", "-o", tmp_path / "m.tif").exit_code == 0
    (tmp_path / "bands" / "dsm.vrt").rename(tmp_path / "dsm.vrt")
    result = run_map("--model", model_file, "--input", f"dsm={tmp_path / 'dsm.vrt'}", "-o", tmp_path / "moved.tif")
    one_line_error(result, f"dsm.vrt: a VRT whose source {tmp_path / 'dsm.tif'} does not exist; build it again over its sources where they are now "
                           "(gdalbuildvrt), or move it back where it was built")
    assert not (tmp_path / "moved.tif").exists()


def test_a_sensor_given_as_band_files_gets_the_line_that_stacks_them(model_file, scene_dir, tmp_path):
    with rasterio.open(scene_dir / "hsi.tif") as src:
        profile, cube = src.profile, src.read()
    (tmp_path / "hsi bands").mkdir()
    for band in range(2):
        with rasterio.open(tmp_path / "hsi bands" / f"B{band + 1}.tif", "w", **(profile | {"count": 1})) as dst:
            dst.write(cube[band], 1)
    stack = "gdalbuildvrt -separate -resolution highest hsi.vrt"
    result = run_map("--model", model_file, "--input", f"hsi={tmp_path / 'hsi bands'}", "-o", tmp_path / "m.tif")
    one_line_error(result, f"hsi bands: a folder, not a raster; pass a raster file (a sensor's bands as separate files in it: stack them "
                           f"first, gdalbuildvrt -separate -resolution highest 'hsi bands.vrt' '{tmp_path / 'hsi bands' / 'BAND1.tif'}' "
                           f"'{tmp_path / 'hsi bands' / 'BAND2.tif'}' …, listing the band files in band order)")
    result = run_map("--model", model_file, "--input", f"hsi={tmp_path / 'hsi bands' / 'B1.tif'}", "-o", tmp_path / "m.tif")
    one_line_error(result, f"B1.tif: 1 band, but the model's hsi has 8; pass the hsi raster the model was trained on (its bands as "
                           f"separate files: stack them first, {stack} BAND1.tif BAND2.tif …, listing the band files in band order)")
    result = run_map("--model", model_file, "--input", f"hsi={tmp_path / 'hsi bands' / 'B1.tif'}",
                     "--input", f"hsi={tmp_path / 'hsi bands' / 'B2.tif'}", "-o", tmp_path / "m.tif")
    one_line_error(result, f"give each modality once (its bands as separate files: stack them first, {stack} "
                           f"'{tmp_path / 'hsi bands' / 'B1.tif'}' '{tmp_path / 'hsi bands' / 'B2.tif'}' …, listing the band files in band order)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hsi bands"]


def test_a_band_marked_alpha_that_is_no_mask_is_refused_with_the_fix(model_file, scene_dir, tmp_path):
    with rasterio.open(scene_dir / "dsm.tif") as src:
        profile = src.profile
    bands = np.random.default_rng(0).integers(0, 256, (4, profile["height"], profile["width"])).astype(np.uint8)
    with rasterio.open(tmp_path / "rgbn.tif", "w", **(profile | {"count": 4, "dtype": "uint8", "nodata": None})) as dst:
        dst.write(bands)  # red, green, blue, near-infrared: GDAL marks the fourth band alpha by default
    with rasterio.open(tmp_path / "rgbn.tif") as src:
        assert src.colorinterp[3].name == "alpha"
    fix = f"mark it so (gdal_edit.py -colorinterp_4 undefined {tmp_path / 'rgbn.tif'}), else make 255 its opaque value"
    result = run_map("--model", model_file, "--input", f"dsm={tmp_path / 'rgbn.tif'}", "-o", tmp_path / "m.tif")
    one_line_error(result, "rgbn.tif: band 4 is marked alpha but holds values between transparent and opaque on 99 % of the pixels")
    assert fix in result.output and not (tmp_path / "m.tif").exists()
    result = CliRunner().invoke(train.main, ["--input", f"rgbn={tmp_path / 'rgbn.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "model.safetensors"), *FAST])
    one_line_error(result, fix)
    with rasterio.open(tmp_path / "rgbn.tif", "r+") as dst:  # the fix
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    result = CliRunner().invoke(train.main, ["--input", f"rgbn={tmp_path / 'rgbn.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "model.safetensors"), *FAST])
    assert result.exit_code == 0, result.output
    assert read_config(tmp_path / "model.safetensors").model.modalities[0].bands == 4


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the container, opened by the test
def test_a_container_of_subdatasets_is_refused_with_the_one_to_convert(model_file, scene_dir, tmp_path):
    from rasterio.shutil import copy

    with rasterio.open(scene_dir / "dsm.tif") as src:
        heights, profile = src.read(1), src.profile
    with rasterio.open(tmp_path / "two.tif", "w", **(profile | {"count": 2})) as dst:
        dst.write(np.stack([heights, heights]))
    copy(tmp_path / "two.tif", tmp_path / "cube.nc", driver="netCDF")  # GDAL writes one netCDF variable per band
    (tmp_path / "two.tif").unlink()
    with rasterio.open(tmp_path / "cube.nc") as src:
        if src.count:
            pytest.skip("this GDAL's netCDF driver wrote one raster, not subdatasets")
    result = run_map("--model", model_file, "--input", f"dsm={tmp_path / 'cube.nc'}", "-o", tmp_path / "m.tif")
    one_line_error(result, "cube.nc: holds 2 subdatasets (variables) and no raster of its own; convert the one to use")
    assert "gdal_translate netcdf:" in result.output.lower() and not (tmp_path / "m.tif").exists()
    result = CliRunner().invoke(train.main, ["--input", f"dsm={tmp_path / 'cube.nc'}", "--input", f"hsi={scene_dir / 'hsi.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "model.safetensors"), *FAST])
    one_line_error(result, "cube.nc: holds 2 subdatasets")


def test_a_subdataset_name_is_refused_with_the_conversion_not_as_a_missing_file(model_file, scene_dir, tmp_path, monkeypatch):
    (tmp_path / "cube.nc").write_bytes(b"CDF")  # a container: only its existence matters here
    (tmp_path / "p.gpkg").write_bytes(b"SQLite")
    name = f'netcdf:"{tmp_path / "cube.nc"}":elevation'  # GDAL reads driver prefixes in any case
    result = run_map("--model", model_file, "--input", f"dsm={name}", "-o", tmp_path / "m.tif")
    one_line_error(result, f"{name}: a GDAL subdataset name, not a file; convert it to a GeoTIFF first")
    assert f"gdal_translate '{name}' elevation.tif" in result.output and "no such file" not in result.output
    result = CliRunner().invoke(train.main, ["--input", f"dsm=GPKG:{tmp_path / 'p.gpkg'}:dsm 2024", "--input", f"hsi={scene_dir / 'hsi.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "model.safetensors"), *FAST])
    one_line_error(result, "a GDAL subdataset name, not a file")
    assert "dsm_2024.tif" in result.output
    name = f"GTIFF_DIR:1:{tmp_path / 'cube.nc'}"  # a form with the file last
    one_line_error(run_map("--model", model_file, "--input", f"dsm={name}", "-o", tmp_path / "m.tif"), f"{name}: a GDAL subdataset name")
    monkeypatch.chdir(tmp_path)
    for path in ("C:x.tif", "S2:B04.tif", f'NETCDF:"{tmp_path / "gone.nc"}":elevation'):  # a drive; paths with a colon; no container
        result = run_map("--model", model_file, "--input", f"dsm={path}", "-o", tmp_path / "m.tif")
        one_line_error(result, f"{path}: no such file; check the path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.nc", "p.gpkg"]


def test_a_table_of_coordinates_is_refused_with_the_line_that_makes_it_points(model_file, scene_dir, tmp_path):
    import geopandas

    points = geopandas.read_file(scene_dir / "train_points.gpkg").to_crs("EPSG:4326")
    table = tmp_path / "gps.csv"
    table.write_text("Lon,Lat,landcover\n" + "".join(f"{p.x},{p.y},{c}\n" for p, c in zip(points.geometry, points["landcover"])))
    fix = f"(ogr2ogr -oo X_POSSIBLE_NAMES=Lon -oo Y_POSSIBLE_NAMES=Lat -a_srs EPSG:4326 gps.gpkg {table}) and pass that file"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--labels", str(table), "--label-field", "landcover",
                                             "-o", str(tmp_path / "m.safetensors"), *FAST])
    one_line_error(result, "gps.csv: a table without geometry (columns Lon, Lat, landcover); make its points a vector layer first")
    assert fix in result.output
    result = run_map("--model", model_file, "--input", f"dsm={scene_dir / 'dsm.tif'}", "--aoi", table, "-o", tmp_path / "m.tif")
    one_line_error(result, fix)
    (tmp_path / "codes.csv").write_text("id,landcover\n1,Grass\n")
    result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "--labels", str(tmp_path / "codes.csv"),
                                                "--label-field", "landcover", "-o", str(tmp_path / "eval"), "--progress", "none"])
    one_line_error(result, "codes.csv: a table without geometry (columns id, landcover); pass points or polygons")
    import pandas
    import pyogrio

    pyogrio.write_dataframe(pandas.read_csv(table), tmp_path / "gps.gpkg", layer="gps")  # a GeoPackage table
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--labels", str(tmp_path / "gps.gpkg"), "--label-field", "landcover",
                                             "-o", str(tmp_path / "m.safetensors"), *FAST])
    one_line_error(result, "gps.gpkg: a table without geometry (columns Lon, Lat, landcover); pass points or polygons (a GeoPackage, "
                           "shapefile or GeoJSON; a table with coordinate columns becomes points with QGIS's Create points layer from table)")
    assert "ogr2ogr" not in result.output  # its -oo X_POSSIBLE_NAMES is the CSV driver's only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.csv", "gps.csv", "gps.gpkg"]


def test_a_local_engineering_crs_is_refused_with_the_line_that_assigns_one(model_file, scene_dir, tmp_path):
    import geopandas

    local = 'LOCAL_CS["arbitrary",UNIT["metre",1]]'
    for name in ("dsm", "test_labels"):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            profile, data = src.profile | {"crs": rasterio.crs.CRS.from_wkt(local)}, src.read()
        with rasterio.open(tmp_path / f"{name}.tif", "w", **profile) as dst:
            dst.write(data)
    for name in ("train_points", "test_polygons"):
        geopandas.read_file(scene_dir / f"{name}.gpkg").set_crs(local, allow_override=True).to_file(tmp_path / f"{name}.gpkg")
    fix = "assign it the CRS its coordinates are in: "
    sensors = ["--input", f"hsi={scene_dir / 'hsi.tif'}", "--input", f"dsm={tmp_path / 'dsm.tif'}"]
    for extra in ([], ["--assume-crs", "EPSG:32632"]):  # --assume-crs is for rasters without a CRS
        result = run_map("--model", model_file, *sensors, "-o", tmp_path / "m.tif", *extra)
        one_line_error(result, f"dsm.tif: its CRS (arbitrary, a local (engineering) CRS) cannot be related to EPSG:32632, the CRS of "
                               f"{scene_dir / 'hsi.tif'}; {fix}"
                               f"gdal_edit.py -a_srs EPSG:XXXX {tmp_path / 'dsm.tif'}")
    hsi = ["--input", f"hsi={scene_dir / 'hsi.tif'}"]
    result = run_map("--model", model_file, *hsi, "--mask", tmp_path / "test_labels.tif", "-o", tmp_path / "m.tif")
    one_line_error(result, f"test_labels.tif: its CRS (arbitrary, a local (engineering) CRS) cannot be related to EPSG:32632, the "
                           f"CRS of the sensor rasters; {fix}")
    result = run_map("--model", model_file, *hsi, "--aoi", tmp_path / "test_polygons.gpkg", "-o", tmp_path / "m.tif")
    one_line_error(result, f"test_polygons.gpkg: its CRS (arbitrary, a local (engineering) CRS) cannot be related to EPSG:32632, the "
                           f"CRS of the sensor rasters; "
                           f"{fix}ogr2ogr -a_srs EPSG:XXXX")
    for labels in ([tmp_path / "test_labels.tif"], [tmp_path / "train_points.gpkg", "--label-field", "landcover"]):
        result = CliRunner().invoke(train.main, [*hsi, "--labels", *map(str, labels), "-o", str(tmp_path / "t.safetensors"), *FAST])
        one_line_error(result, f"{labels[0].name}: its CRS (arbitrary, a local (engineering) CRS) cannot be related to EPSG:32632, "
                               f"the CRS of the sensor rasters; {fix}")
    local_sensors = ["--input", f"dsm={tmp_path / 'dsm.tif'}"]  # the sensor in the local CRS, the labels and area in a real one
    result = CliRunner().invoke(train.main, [*local_sensors, "--labels", str(scene_dir / "train_points.gpkg"), "--label-field", "landcover",
                                             "-o", str(tmp_path / "t.safetensors"), *FAST])
    told = "train_points.gpkg: its CRS (EPSG:32632) cannot be related to arbitrary, the CRS of the sensor rasters, a local " \
        "(engineering) CRS; assign the sensor rasters the CRS their coordinates are in (gdal_edit.py -a_srs EPSG:XXXX on each)"
    one_line_error(result, told)
    result = run_map("--model", model_file, *local_sensors, "--aoi", scene_dir / "test_polygons.gpkg", "-o", tmp_path / "m.tif")
    one_line_error(result, "test_polygons.gpkg: its CRS (EPSG:32632) cannot be related to arbitrary, the CRS of the sensor rasters, a local")
    result = run_map("--model", model_file, *local_sensors, "--input", f"hsi={scene_dir / 'hsi.tif'}", "--reference",
                     tmp_path / "dsm.tif", "-o", tmp_path / "m.tif")  # the local raster as the grid: it is the one to fix
    one_line_error(result, f"dsm.tif: its CRS (arbitrary, a local (engineering) CRS) cannot be related to EPSG:32632, the CRS of "
                               f"{scene_dir / 'hsi.tif'}; {fix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dsm.tif", "test_labels.tif", "test_polygons.gpkg", "train_points.gpkg"]


def test_a_report_folder_holding_files_no_mamol_report_wrote_is_refused_and_left_alone(model_file, scene_dir, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "report.html").write_text("<html>my thesis</html>")
    (project / "metrics.csv").write_text("random forest,0.91\n")
    result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(project), "--progress", "none"])
    one_line_error(result, f"-o {project}: holds metrics.csv, report.html, which no mamol report wrote and a report there would replace; "
                           "give the report a folder of its own (a new or an empty one)")
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"), "--report", str(project), *FAST])
    one_line_error(result, f"--report {project}: holds metrics.csv, report.html, which no mamol report wrote")
    assert (project / "report.html").read_text() == "<html>my thesis</html>" and sorted(p.name for p in project.iterdir()) == [
        "metrics.csv", "report.html"]
    scored = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(tmp_path / "eval"),
                                                "--progress", "none"])
    assert scored.exit_code == 0, scored.output
    again = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(tmp_path / "eval"),
                                               "--progress", "none"])
    assert again.exit_code == 0, again.output  # an earlier mamol report there is replaced, as before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "confusion_matrix.csv").write_text("mine\n")  # no name a report writes: left beside it
    beside = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(tmp_path / "mine"),
                                                "--progress", "none"])
    assert beside.exit_code == 0 and (tmp_path / "mine" / "confusion_matrix.csv").read_text() == "mine\n", beside.output


def test_features_without_geometry_are_skipped_and_invalid_ones_counted_without_a_library_warning(scene_dir, tmp_path, caplog, recwarn):
    import geopandas
    from shapely.geometry import Polygon

    from mamol_core.data.labels import rasterize_vector
    from mamol_core.data.scene import open_scene

    polygons = geopandas.read_file(scene_dir / "test_polygons.gpkg")
    polygons.loc[0, "geometry"] = Polygon()  # an empty geometry, as editors leave behind
    polygons.loc[1, "geometry"] = None
    x0, y0, x1, y1 = polygons.geometry[2].bounds
    polygons.loc[2, "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])  # a bow tie: its ring crosses itself
    polygons.to_file(tmp_path / "fields.gpkg")
    grid = open_scene(scene_dir).grid
    caplog.set_level(logging.WARNING)
    labels, _, _ = rasterize_vector(tmp_path / "fields.gpkg", "landcover", grid, None)
    assert labels.any()
    assert f"{tmp_path / 'fields.gpkg'}: 2 of {len(polygons)} features have no geometry (null or empty) and were skipped" in caplog.text
    assert f"{tmp_path / 'fields.gpkg'}: 1 of {len(polygons) - 2} features has invalid geometry (a ring that crosses itself, …)" \
        in caplog.text
    assert not [w for w in recwarn if "GeoSeries" in str(w.message)], [str(w.message) for w in recwarn]


def test_an_output_folder_that_is_a_file_a_nameless_map_and_a_stride_without_dense_tiles_get_one_line(model_file, scene_dir, tmp_path):
    from mamol_cli import bench

    afile = tmp_path / "afile"
    afile.write_text("kept")
    common = ["--model", str(model_file), "--scene", str(scene_dir), "--device", "cpu", "--progress", "none", "--quiet"]
    one_line_error(CliRunner().invoke(evaluate.main, [*common, "-o", str(afile)]), "afile: is a file, not a folder")
    one_line_error(CliRunner().invoke(evaluate.main, [*common, "--stride", "4"]), "--stride 4: only --mode dense steps tiles")
    one_line_error(CliRunner().invoke(bench.main, ["run", "--scene", str(scene_dir), "--name", "s", "--methods", "mamol", "-o", str(afile),
                                                   "--backbone", "tiny", "--device", "cpu", "--quiet"]), "afile: is a file, not a folder")
    one_line_error(run_map("--model", model_file, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", ""), "give the map a file name")
    assert afile.read_text() == "kept" and sorted(tmp_path.iterdir()) == [afile]


def test_rasterios_warning_about_a_raster_without_geotransform_is_not_printed_beside_mamols_line():
    import warnings

    from mamol_cli.common import setup_logging

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_logging(True)
        warnings.warn("Dataset has no geotransform, gcps, or rpcs. The identity matrix will be returned.",
                      rasterio.errors.NotGeoreferencedWarning)
        warnings.warn("another warning", UserWarning)
    assert [str(w.message) for w in caught] == ["another warning"]


def test_an_unwritable_report_folder_stops_training_before_it_starts(scene_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"),
                                             "--report", str(blocker / "report"), *FAST])
    one_line_error(result, "is not a writable folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_inputs_without_one_valid_pixel(model_file, scene_dir, tmp_path, caplog):
    with rasterio.open(scene_dir / "dsm.tif") as src:
        profile, shape = src.profile, (src.count, src.height, src.width)
    profile.update(nodata=-9999.0, dtype="float32")
    with rasterio.open(tmp_path / "empty.tif", "w", **profile) as dst:
        dst.write(np.full(shape, -9999.0, np.float32))
    for blocks in ([], ["--block-size", "12"]):  # one block, or several through the folder of finished blocks
        one_line_error(run_map("--model", model_file, "--input", f"dsm={tmp_path / 'empty.tif'}", "-o", tmp_path / "m.tif", *blocks),
                       "no pixel holds valid data")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif"]
    result = CliRunner().invoke(map_cli.main, ["--model", str(model_file), "--input", f"dsm={tmp_path / 'empty.tif'}", "--input",
                                               f"hsi={scene_dir / 'hsi.tif'}", "-o", str(tmp_path / "m.tif"), "--progress", "none"])
    assert result.exit_code == 0 and "empty.tif: no tile of the map holds enough valid pixels of this dsm raster (it is all nodata" in caplog.text


def test_labels_of_one_class_are_refused(scene_dir, tmp_path):
    with rasterio.open(scene_dir / "train_labels.tif") as src:
        labels, profile = src.read(1), src.profile
    with rasterio.open(tmp_path / "one.tif", "w", **profile) as dst:
        dst.write(np.where(labels > 0, labels.max(), 0).astype(labels.dtype), 1)
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--labels", str(tmp_path / "one.tif"), "-o",
                                             str(tmp_path / "m.safetensors"), *FAST])
    one_line_error(result, "a classifier needs labels of at least two classes")


def test_classes_are_counted_where_the_sensors_hold_data(scene_dir, tmp_path, caplog):
    """Labels of several classes over sensors that hold data under one of them only train no one-class model (it would
    score 100 % on it); a class whose every training pixel lies on nodata is named."""
    with rasterio.open(scene_dir / "train_labels.tif") as src:
        labels = src.read(1)
    present = [v for v in np.unique(labels) if v]
    for name in ("hsi", "dsm"):
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            data, profile = src.read().astype(np.float32), src.profile | {"dtype": "float32", "nodata": -9999.0}
        for keep, path in ((present[:1], tmp_path / f"{name}_one.tif"), (present[1:], tmp_path / f"{name}_most.tif")):
            data_kept = np.where(np.isin(labels, keep) | (labels == 0), data, np.float32(-9999.0))
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data_kept)
    args = ["--labels", str(scene_dir / "train_labels.tif"), "--no-eval", *FAST]
    one = CliRunner().invoke(train.main, ["--input", f"hsi={tmp_path / 'hsi_one.tif'}", "--input", f"dsm={tmp_path / 'dsm_one.tif'}",
                                          "-o", str(tmp_path / "one.safetensors"), *args])
    one_line_error(one, "keeps training pixels where the sensors hold data")
    assert not (tmp_path / "one.safetensors").exists()
    most = CliRunner().invoke(train.main, ["--input", f"hsi={tmp_path / 'hsi_most.tif'}", "--input", f"dsm={tmp_path / 'dsm_most.tif'}",
                                           "-o", str(tmp_path / "most.safetensors"), *args])
    assert most.exit_code == 0, most.output
    assert "lies on nodata; the model cannot learn it" in caplog.text


def test_a_label_raster_in_the_scene_folder_is_no_sensor(scene_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    scene = tmp_path / "scene"
    scene.mkdir()
    for name in ("hsi.tif", "dsm.tif", "classes.json"):
        (scene / name).write_bytes((scene_dir / name).read_bytes())
    (scene / "gt.tif").write_bytes((scene_dir / "train_labels.tif").read_bytes())
    (scene / "check.tif").write_bytes((scene_dir / "test_labels.tif").read_bytes())
    result = CliRunner().invoke(train.main, ["--scene", str(scene), "--labels", str(scene / "gt.tif"), "--test-labels",
                                             str(scene / "check.tif"), "-o", str(tmp_path / "m.safetensors"), "--no-eval", *FAST])
    assert result.exit_code == 0, result.output
    assert read_config(tmp_path / "m.safetensors").model.modality_names == ["dsm", "hsi"]
    assert "gt.tif: given as --labels, not a sensor" in caplog.text and "check.tif: given as --test-labels, not a sensor" in caplog.text
    twice = CliRunner().invoke(train.main, ["--scene", str(scene), "--input", f"gt={scene / 'gt.tif'}", "--labels", str(scene / "gt.tif"),
                                            "-o", str(tmp_path / "n.safetensors"), *FAST])
    one_line_error(twice, "given as the gt raster and as --labels; labels are not a sensor")


def test_evaluation_matches_classes_by_name_not_by_code(model_file, scene_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    scene = tmp_path / "scene"
    scene.mkdir()
    for name in ("hsi.tif", "dsm.tif"):
        (scene / name).write_bytes((scene_dir / name).read_bytes())
    table = json.loads((scene_dir / "classes.json").read_text())
    with rasterio.open(scene_dir / "test_labels.tif") as src:
        labels, profile = src.read(1), src.profile
    codes = sorted(int(k) for k in table)
    swapped = {str(codes[0]): table[str(codes[1])], str(codes[1]): table[str(codes[0])],
               **{k: v for k, v in table.items() if int(k) not in codes[:2]}}
    recoded = labels.copy()
    recoded[labels == codes[0]], recoded[labels == codes[1]] = codes[1], codes[0]
    with rasterio.open(scene / "test_labels.tif", "w", **profile) as dst:
        dst.write(recoded, 1)
    (scene / "classes.json").write_text(json.dumps(swapped))
    same = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(tmp_path / "a"), "--progress", "none"])
    swapped_run = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene), "-o", str(tmp_path / "b"), "--progress", "none"])
    assert same.exit_code == 0 and swapped_run.exit_code == 0, swapped_run.output
    oa = [json.loads((tmp_path / f / "metrics.json").read_text())["results"]["overall"]["oa"] for f in ("a", "b")]
    assert oa[0] == oa[1] and f"is the model's class {codes[1]}" in caplog.text
    caplog.clear()  # without --scene, the class table beside the labels says what their codes are
    loose = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--input", f"hsi={scene / 'hsi.tif'}", "--input",
                                               f"dsm={scene / 'dsm.tif'}", "--labels", str(scene / "test_labels.tif"),
                                               "-o", str(tmp_path / "d"), "--progress", "none"])
    assert loose.exit_code == 0, loose.output
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["results"]["overall"]["oa"] == oa[0]
    assert "no class table beside it" not in caplog.text and f"is the model's class {codes[1]}" in caplog.text
    caplog.clear()  # with --scene, labels elsewhere follow the table beside them, not the scene's
    elsewhere = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "--labels",
                                                   str(scene / "test_labels.tif"), "-o", str(tmp_path / "e"), "--progress", "none"])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["results"]["overall"]["oa"] == oa[0]
    assert f"test_labels.tif: its codes are those of {scene / 'classes.json'}" in caplog.text
    for option in ("--labels", "--test-labels"):  # training refuses the mix-up, for its test labels too
        trained = CliRunner().invoke(train.main, ["--scene", str(scene_dir), option, str(scene / "test_labels.tif"), "-o",
                                                  str(tmp_path / "t.safetensors"), *FAST])
        one_line_error(trained, f"{scene / 'classes.json'}: calls code {codes[0]} {table[str(codes[1])]['name']!r}, where "
                                f"{scene_dir / 'classes.json'}, which training reads {scene / 'test_labels.tif'}'s codes with, calls it "
                                f"{table[str(codes[0])]['name']!r}")
    bare = tmp_path / "bare"  # a scene without a table: training reads the labels by the one beside them, as scoring then does
    bare.mkdir()
    for name in ("hsi.tif", "dsm.tif"):
        (bare / name).write_bytes((scene_dir / name).read_bytes())
    CliRunner().invoke(train.main, ["--scene", str(bare), "--labels", str(scene / "test_labels.tif"), "--no-eval", "-o",
                                    str(tmp_path / "b.safetensors"), *FAST])
    assert [c.name for c in read_config(tmp_path / "b.safetensors").model.classes] == [swapped[str(c)]["name"] for c in codes]
    scored = CliRunner().invoke(evaluate.main, ["--model", str(tmp_path / "b.safetensors"), "--scene", str(bare), "--labels",
                                                str(scene / "test_labels.tif"), "-o", str(tmp_path / "f"), "--quiet"])
    assert scored.exit_code == 0, scored.output
    swapped[str(codes[0])] = {"name": "Glacier", "color": "#ffffff"}
    (scene / "classes.json").write_text(json.dumps(swapped))
    result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene), "-o", str(tmp_path / "c"), "--quiet"])
    one_line_error(result, "class " + str(codes[0]) + " of its class table: class name 'Glacier' is not in the model's classes")
    assert not (tmp_path / "c").exists()


def test_vector_test_labels_with_codes_are_warned_about_and_unknown_names_refused(model_file, scene_dir, tmp_path, caplog):
    import geopandas

    import shutil

    polygons = geopandas.read_file(scene_dir / "test_polygons.gpkg")
    model_classes = read_config(model_file).model.classes
    scene = tmp_path / "scene"  # a scene whose class table numbers the classes otherwise than the model
    shutil.copytree(scene_dir, scene)
    (scene / "test_labels.tif").unlink()
    renumbered = {c.name: 10 + i for i, c in enumerate(reversed(model_classes))}
    (scene / "classes.json").write_text(json.dumps({str(v): {"name": n, "color": "#000000"} for n, v in renumbered.items()}))
    polygons["code"] = [renumbered[n] for n in polygons["landcover"]]
    polygons.to_file(tmp_path / "coded.gpkg", driver="GPKG")
    caplog.set_level(logging.INFO)
    scores = []
    for field, labels in (("landcover", "coded.gpkg"), ("code", "coded.gpkg")):
        result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene), "--labels", str(tmp_path / labels),
                                                    "--label-field", field, "-o", str(tmp_path / field), "--progress", "none"])
        assert result.exit_code == 0, result.output
        scores.append(json.loads((tmp_path / field / "metrics.json").read_text())["results"]["overall"])
    assert scores[0] == scores[1]  # codes of the scene's table score as the class names do
    assert "field 'code' holds class codes, read by the labels' class table and matched to the model's by name" in caplog.text
    names = {c.name: c.value for c in model_classes}
    polygons["code"] = [names[n] for n in polygons["landcover"]]
    polygons.to_file(tmp_path / "coded.gpkg", driver="GPKG")
    args = ["--model", str(model_file), "--scene", str(scene_dir), "--progress", "none"]
    (scene / "classes.json").unlink()  # no table of its own: codes are read as the model's, with a warning
    result = CliRunner().invoke(evaluate.main, [*args[:3], str(scene), *args[4:], "--labels", str(tmp_path / "coded.gpkg"),
                                                "--label-field", "code", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0 and "field 'code' holds class codes, read as the model's" in caplog.text, result.output
    polygons["landcover"] = polygons["landcover"].str.upper()  # names are matched whatever their case, as a scene's table's are
    polygons.to_file(tmp_path / "named.gpkg", driver="GPKG")
    result = CliRunner().invoke(evaluate.main, [*args, "--labels", str(tmp_path / "named.gpkg"), "--label-field", "landcover",
                                                "-o", str(tmp_path / "upper"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "upper" / "metrics.json").read_text())["results"]["overall"] == scores[0]
    polygons.loc[0, "landcover"] = "Glacier"
    polygons.to_file(tmp_path / "named.gpkg", driver="GPKG")
    result = CliRunner().invoke(evaluate.main, [*args, "--labels", str(tmp_path / "named.gpkg"), "--label-field", "landcover",
                                                "-o", str(tmp_path / "b"), "--quiet"])
    one_line_error(result, f"field 'landcover': class name 'Glacier' is not in the class table "
                           f"({', '.join(c.name for c in model_classes)}); relabel it or evaluate a model trained with that class")
    assert not (tmp_path / "b").exists()


def test_an_interruption_names_the_outputs_finished_before_it(tmp_path):
    forget_finished()
    assert interruption_message(KeyboardInterrupt()) == "interrupted: nothing was written"
    with atomic_path(tmp_path / "model.safetensors") as temporary:
        temporary.write_text("weights")
    assert interruption_message(KeyboardInterrupt()) == (f"interrupted: kept {tmp_path / 'model.safetensors'} (complete); "
                                                         "nothing else was written")
    forget_finished()


def test_finished_outputs_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.bin") as temporary:
            temporary.write_bytes(b"x")
            os.chmod(temporary, 0o600)
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_ctrl_c_during_the_renames_waits_until_every_output_has_its_name(tmp_path, monkeypatch):
    """A signal between two renames would leave a new map beside an old map's side outputs."""
    from mamol_core import atomic

    renamed = []

    def replace_then_stop(source, target):
        os.rename(source, target)
        renamed.append(target)
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "replace", replace_then_stop)
    forget_finished()
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_paths([tmp_path / "map.tif", tmp_path / "map_confidence.tif"]) as temporaries:
            for temporary in temporaries:
                temporary.write_bytes(b"x")
    assert len(renamed) == 2 and interruption_message(KeyboardInterrupt()).startswith(f"interrupted: kept {tmp_path / 'map.tif'}, ")
    forget_finished()


def test_renames_inside_training_s_own_hold_leave_the_signal_to_it(tmp_path, monkeypatch):
    """A state saved inside the training loop's hold: Ctrl-C during its rename is the loop's to act on at
    the step's end (raised from the save, the loop never said where the state was)."""
    from mamol_core import atomic
    from mamol_core.errors import deferred_interruptions

    def replace_then_stop(source, target):
        os.rename(source, target)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "replace", replace_then_stop)
    with deferred_interruptions(True) as interrupted:
        with atomic.atomic_path(tmp_path / "m.state.safetensors") as temporary:
            temporary.write_bytes(b"x")
        assert (tmp_path / "m.state.safetensors").exists() and len(interrupted) == 1
    forget_finished()


def test_only_rank_0_of_several_says_what_an_interruption_left(monkeypatch, capsys):
    from mamol_cli.common import stop_interrupted

    for world, rank, said in [("2", "1", False), ("2", "0", True), (None, "3", True)]:
        monkeypatch.setenv("RANK", rank)
        if world is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", world)
        with pytest.raises(SystemExit) as stopped:
            stop_interrupted(KeyboardInterrupt())
        assert stopped.value.code == 130 and ("interrupted: nothing was written" in capsys.readouterr().err) == said


def test_a_report_stopped_while_written_leaves_no_folder(tmp_path, monkeypatch):
    from mamol_core.evaluation import report
    from mamol_core.evaluation.predict import Evaluation

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_confusions", stopped)
    evaluation = Evaluation(["a", "b"], {"overall": np.array([[3, 1], [0, 2]])}, ["hsi"])
    with pytest.raises(KeyboardInterrupt):
        report.write_report(tmp_path / "new" / "report", evaluation, {})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        report.write_report(tmp_path / "kept", evaluation, {})
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []  # a folder it found stays


def test_ctrl_c_while_an_option_is_checked_or_breaking_an_import_ends_as_any_interruption(scene_dir, tmp_path, monkeypatch):
    """click said "Aborted!" and exited 1 for Ctrl-C in --backbone's check (it imports the backbones); an
    import that Ctrl-C broke surfaced as numpy's RecursionError with a traceback."""
    from mamol_core import backbones
    from mamol_core.data import scene

    def stopped(name):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(backbones, "check_backbone_name", stopped)
        result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"), *CLI_FAST])
    assert result.exit_code == 130 and result.output.strip() == "interrupted: nothing was written", result.output
    from mamol_cli import bench

    with monkeypatch.context() as patched, pytest.raises(click.exceptions.Abort):  # embedded: the caller's to handle, no exit
        patched.setattr(backbones, "check_backbone_name", stopped)
        bench.main.main(["speed", "--backbones", "tiny", "--json", str(tmp_path / "s.json")], standalone_mode=False, obj={"raise": True})

    def broken_import(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except KeyboardInterrupt:
            raise RecursionError("maximum recursion depth exceeded") from None

    monkeypatch.setattr(scene, "open_scene", broken_import)
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"), *CLI_FAST])
    assert result.exit_code == 143 and result.output.strip() == "terminated (SIGTERM): nothing was written", result.output
    assert not list(tmp_path.iterdir())


def test_a_single_sensor_model_trains_maps_and_ignores_earlier_maps_in_its_folder(scene_dir, tmp_path):
    scene = tmp_path / "scene"
    scene.mkdir()
    for name in ("dsm.tif", "train_labels.tif", "test_labels.tif", "classes.json"):
        (scene / name).write_bytes((scene_dir / name).read_bytes())
    dsm_model = tmp_path / "dsm_only.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene), "-o", str(dsm_model), *FAST])
    assert result.exit_code == 0, result.output
    assert run_map("--model", dsm_model, "--input", f"dsm={scene / 'dsm.tif'}", "-o", scene / "landcover.tif",
                   "--availability").exit_code == 0
    again = CliRunner().invoke(train.main, ["--scene", str(scene), "-o", str(tmp_path / "again.safetensors"), *FAST])
    assert again.exit_code == 0, again.output
    for path in (dsm_model, tmp_path / "again.safetensors"):
        config = read_config(path)
        assert config.model.modality_names == ["dsm"] and config.protocol.missing_rate == 0.0


def test_evaluation_after_training_can_be_skipped_or_bounded(scene_dir, tmp_path):
    skipped = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "a.safetensors"), "--no-eval", *FAST])
    assert skipped.exit_code == 0 and (tmp_path / "a.safetensors").exists() and not (tmp_path / "a.report").exists()
    bounded = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "b.safetensors"), "--eval-pixels", "50", *FAST])
    assert bounded.exit_code == 0, bounded.output
    metrics = json.loads((tmp_path / "b.report" / "metrics.json").read_text())
    assert metrics["results"]["overall"]["samples"] == 50 and metrics["context"]["test_pixels_scored"] == 50
    assert metrics["context"]["test_pixels"] > 50


def test_skipped_labelled_pixels_are_told_apart_by_why(caplog):
    labels = np.array([[1, 1, 2]], np.uint8)
    valid = np.array([[[True, False, True]], [[False, False, True]]])  # pixel 0: only a; pixel 1: nothing; pixel 2: a and b
    classes = [ClassSpec(1, "x", "#000000"), ClassSpec(2, "y", "#ffffff")]
    kept = pixel_set(labels, Window(0, 0, 3, 1), valid, classes, ["a", "b"], ProtocolSpec(1.0, "a", 0), 0, "test")
    assert len(kept) == 1 and kept.presence.tolist() == [[False, True]]
    assert "1 labelled test pixels have no valid data in any sensor" in caplog.text
    assert "1 labelled test pixels have valid data only in sensors that the missing-sensor protocol drops" in caplog.text


def test_evaluation_reads_a_finer_scene_at_the_models_training_pixel_size(model_file, scene_dir, tmp_path):
    fine = tmp_path / "fine"
    fine.mkdir()
    for name in ("hsi.tif", "dsm.tif", "test_labels.tif"):
        with rasterio.open(scene_dir / name) as src:
            data, transform = src.read(), src.transform
        write_raster(fine / name, data.repeat(2, axis=1).repeat(2, axis=2), transform @ Affine.scale(0.5))
    (fine / "classes.json").write_text((scene_dir / "classes.json").read_text())
    runs = [CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(folder), "-o", str(tmp_path / name),
                                               "--progress", "none", "--quiet"]) for name, folder in (("a", scene_dir), ("b", fine))]
    assert all(r.exit_code == 0 for r in runs), runs[1].output
    a, b = (json.loads((tmp_path / f / "metrics.json").read_text())["results"]["overall"] for f in ("a", "b"))
    # The same pixels are scored; their values agree only nearly: GDAL's bilinear kernel widens when it
    # downsamples, so the warped 2x-finer scene is slightly smoothed and a near-tie may flip.
    assert a["samples"] == b["samples"] and abs(a["oa"] - b["oa"]) <= 2.0


def test_a_full_disk_while_saving_a_block_leaves_no_half_written_block(tmp_path, monkeypatch):
    from mamol_core.mapping import parts as parts_module

    parts = parts_module.BlockParts(tmp_path / "map.tif", {"job": 1})
    assert parts.prepare() == 0
    saved = {"classes": np.ones((4, 4), np.uint8), "probabilities": np.arange(96, dtype=np.uint8).reshape(6, 4, 4),
             "used_count": np.array([3, 0], np.int64)}
    parts.save(0, saved)
    loaded = parts.load(0)  # deflated on disk, the same arrays back
    assert all(np.array_equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in saved.items()) and loaded.keys() == saved.keys()

    def full(arrays, filename, metadata=None):
        from safetensors import SafetensorError

        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(parts_module, "save_file", full)
    with pytest.raises(MamolError, match=r"block-0000001.safetensors: cannot be written \(Error while serializing: I/O error: No "
                                         r"space left on device \(os error 28\)\); free space"):
        parts.save(1, {"classes": np.ones((4, 4), np.uint8)})
    assert sorted(p.name for p in parts.folder.iterdir()) == ["block-0000000.safetensors", "job.json"]
    assert list(parts.finished(3)) == [True, False, False]
    assert parts_module.BlockParts(tmp_path / "map.tif", {"job": 1}).prepare() == 1  # the same job keeps its block
    assert parts_module.BlockParts(tmp_path / "map.tif", {"job": 2}).prepare() == 0  # another job starts afresh
    assert sorted(p.name for p in parts.folder.iterdir()) == ["job.json"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_that_refuses_new_files_is_found_before_any_work(scene_dir, tmp_path):
    """Permission bits pass in /proc (and for root everywhere); the first state save used to find out after training."""
    from mamol_core.atomic import check_folder, check_writable

    with pytest.raises(MamolError, match=r"the folder /proc is not writable \(it takes no new files\)"):
        check_writable(Path("/proc/model.safetensors"))
    check_writable(tmp_path / "model.safetensors")
    check_folder(tmp_path / "report")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing
    with pytest.raises(MamolError, match=r"/proc/report: cannot be written \(/proc is not a writable folder\)"):
        check_folder(Path("/proc/report"))
    one_line_error(CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", "/proc/model.safetensors", "--no-eval", *FAST]),
                   "/proc/model.safetensors: the folder /proc is not writable (it takes no new files); choose another")


def test_a_second_run_into_the_same_output_stops_with_one_line_and_leaves_the_first_ones_blocks(model_file, scene_dir, tmp_path):
    from mamol_core.mapping import parts as parts_module

    output = tmp_path / "map.tif"
    first = parts_module.BlockParts(output, {"job": 1})
    with first.exclusive():
        assert first.prepare() == 0
        first.save(0, {"classes": np.ones((4, 4), np.uint8)})
        assert (tmp_path / ".map.tif.blocks.lock").read_text() == str(os.getpid())
        with pytest.raises(MamolError, match=rf"{output}: another mamol-map \(process {os.getpid()}\) is writing this map now"):
            with parts_module.BlockParts(output, {"job": 2}).exclusive():
                pass
        # through the command: a map of several blocks into the same output (another job) is refused, and the
        # first run's blocks, its lock and the folder are as they were
        one_line_error(run_map("--model", model_file, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", output, "--block-size", "12"),
                       "another mamol-map")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".map.tif.blocks", ".map.tif.blocks.lock"]
        assert list(first.finished(2)) == [True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".map.tif.blocks"]  # released: the lock file is gone
    with parts_module.BlockParts(output, {"job": 2}).exclusive():  # and the next run may take it
        pass


def test_a_file_system_without_locks_maps_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno

    from mamol_core.mapping import parts as parts_module

    def no_locks(handle):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(parts_module, "_try_lock", no_locks)  # as on some network and FUSE mounts
    caplog.set_level(logging.WARNING)
    with parts_module.BlockParts(tmp_path / "map.tif", {"job": 1}).exclusive():
        assert "cannot be locked here (No locks available); two runs into map.tif at once would clash" in caplog.text
    assert list(tmp_path.iterdir()) == []  # no lock file left beside the map


def test_a_full_disk_on_a_continued_map_keeps_the_earlier_runs_blocks(model_file, scene_dir, tmp_path, monkeypatch, caplog):
    """An error leaves nothing of its own run's making, but blocks an earlier, stopped run left are not its to delete."""
    from mamol_core.mapping import parts as parts_module

    command = ["--model", model_file, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", tmp_path / "map.tif", "--block-size", "12"]
    saved = parts_module.BlockParts.save

    def stop_after(count, error):
        def save(parts, index, arrays):
            if len(list(parts.folder.glob("block-*"))) == count:
                raise error
            saved(parts, index, arrays)
        return save

    monkeypatch.setattr(parts_module.BlockParts, "save", stop_after(2, KeyboardInterrupt()))
    assert run_map(*command).exit_code == 130
    monkeypatch.setattr(parts_module.BlockParts, "save", stop_after(4, MamolError("block: cannot be written (No space left on device)")))
    result = run_map(*command)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert "the 4 finished blocks stay in" in caplog.text and "(2 of them from an earlier run)" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == [".map.tif.blocks"]
    monkeypatch.undo()
    result = run_map(*command)
    assert result.exit_code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["map.qml", "map.tif", "map.tif.aux.xml",
                                                                                    "map_quicklook.png"], result.output
    fresh = run_map(*command[:4], "-o", tmp_path / "fresh.tif", "--block-size", "12")
    assert fresh.exit_code == 0
    with rasterio.open(tmp_path / "map.tif") as continued, rasterio.open(tmp_path / "fresh.tif") as uninterrupted:
        assert np.array_equal(continued.read(), uninterrupted.read())
    monkeypatch.setattr(parts_module.BlockParts, "save", stop_after(2, MamolError("block: cannot be written (No space left)")))
    one_line_error(run_map(*command[:4], "-o", tmp_path / "other.tif", "--block-size", "12"), "No space left")
    assert not (tmp_path / ".other.tif.blocks").exists()  # a run that found no earlier blocks leaves nothing


def test_a_full_disk_when_the_model_or_map_is_written_is_one_line_and_leaves_nothing(scene_dir, model_file, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from mamol_core.mapping import outputs
    from mamol_core.modelfile import weights

    def full_safetensors(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(weights, "save_file", full_safetensors)
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "model.safetensors"), "--no-eval", *FAST])
    one_line_error(result, "writing model.safetensors failed (Error while serializing: I/O error: No space left on device")
    assert "free space there or choose another output folder" in result.output
    assert "the trained state is kept in" in result.output  # the training is not lost: --resume writes the model
    monkeypatch.undo()
    resumed = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "model.safetensors"), "--no-eval", *FAST,
                                              "--continue"])
    assert resumed.exit_code == 0 and (tmp_path / "model.safetensors").is_file(), resumed.output
    for written in ("model.safetensors", "model.state.safetensors"):
        (tmp_path / written).unlink(missing_ok=True)

    def full_disk(*args, **kwargs):
        raise rasterio.errors.RasterioIOError("Write failed. See previous exception for details.")

    monkeypatch.setattr(outputs, "write_quicklook", full_disk)
    one_line_error(run_map("--model", model_file, "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", tmp_path / "map.tif"),
                   "writing map.tif, map.tif.aux.xml, map.qml, map_quicklook.png failed (Write failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_band_without_data_under_the_training_pixels_is_named(scene_dir, tmp_path):
    with rasterio.open(scene_dir / "hsi.tif") as src:
        data, profile = src.read().astype(np.float32), src.profile | {"dtype": "float32", "nodata": None}
    data[2] = np.nan
    with rasterio.open(tmp_path / "hsi.tif", "w", **profile) as dst:
        dst.write(data)
    result = CliRunner().invoke(train.main, ["--input", f"hsi={tmp_path / 'hsi.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                             "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "m.safetensors"),
                                             "--no-eval", *FAST])
    one_line_error(result, "hsi.tif: band 3 of its 8 holds no data under any training pixel, and a pixel counts only where every "
                           "band does; check the nodata value, or drop it (gdal_translate -b 1 -b 2 -b 4 ")


def test_evaluation_without_one_test_pixel_to_score_is_refused_and_an_empty_sensor_named(model_file, scene_dir, tmp_path, caplog):
    with rasterio.open(scene_dir / "dsm.tif") as src:
        profile, shape = src.profile | {"nodata": -9999.0, "dtype": "float32"}, (src.count, src.height, src.width)
    with rasterio.open(tmp_path / "empty.tif", "w", **profile) as dst:
        dst.write(np.full(shape, -9999.0, np.float32))
    common = ["--model", str(model_file), "--labels", str(scene_dir / "test_labels.tif"), "--progress", "none"]
    alone = CliRunner().invoke(evaluate.main, [*common, "--input", f"dsm={tmp_path / 'empty.tif'}", "-o", str(tmp_path / "a"), "--quiet"])
    one_line_error(alone, "empty.tif: no test pixel can be scored: each lies on nodata in every sensor given")
    assert not (tmp_path / "a").exists()
    beside = CliRunner().invoke(evaluate.main, [*common, "--input", f"dsm={tmp_path / 'empty.tif'}", "--input",
                                                f"hsi={scene_dir / 'hsi.tif'}", "-o", str(tmp_path / "b")])
    assert beside.exit_code == 0, beside.output
    assert "empty.tif: no valid value under any test label; dsm counts as missing on every test pixel" in caplog.text
