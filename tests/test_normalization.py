"""Quantile normalisation: the fitted tables, the transform, and a model that carries them to mapping."""

import dataclasses
import json
from statistics import NormalDist

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from mamol_cli import info, map as map_cli, train
from mamol_core.config import MamolConfig, ModalitySpec, ProtocolSpec
from mamol_core.data.pixels import QUANTILES, prepare_scene, quantile_table
from mamol_core.data.reader import normalize
from mamol_core.data.scene import open_scene
from mamol_core.errors import MamolError
from mamol_core.modelfile.header import read_config

from conftest import CLI_FAST


def test_quantile_table_maps_quantiles_to_normal_scores_and_merges_ties():
    rng = np.random.default_rng(0)
    values, scores = quantile_table(rng.exponential(size=5000))
    assert len(values) == QUANTILES and np.all(np.diff(values) > 0) and np.all(np.diff(scores) > 0)
    assert scores[0] == pytest.approx(-scores[-1]) and scores[0] == pytest.approx(-2.5758, abs=1e-3)  # probabilities 0.005 .. 0.995
    # a band that is 0 on 40 % of its pixels: the 40 quantiles at 0 become one entry, the mean of their scores
    tied_values, tied_scores = quantile_table(np.concatenate([np.zeros(400), np.arange(1, 601)]))
    assert tied_values[0] == 0 and tied_values[1] > 0 and len(tied_values) == QUANTILES - 39
    assert tied_scores[0] < tied_scores[1]
    assert tied_scores[0] == pytest.approx(np.mean([NormalDist().inv_cdf((k + 0.5) / 100) for k in range(40)]))


def test_quantile_normalisation_is_monotone_spreads_a_heavy_tail_and_ignores_outliers():
    rng = np.random.default_rng(1)
    training = np.concatenate([rng.normal(80, 10, 990), [2900.0] * 10])  # LiDAR intensity with a few specular returns
    values, scores = quantile_table(training)
    spec = ModalitySpec("intensity", 1, [float(training.mean())], [float(training.std())], [values], [scores])
    band = np.array([[[40.0, 70.0, 80.0, 90.0, 120.0, 5000.0]]], np.float32)
    valid = np.ones((1, 1, 6), bool)
    quantile = normalize(band.copy(), valid, [spec])[0, 0]
    standard = normalize(band.copy(), valid, [dataclasses.replace(spec, quantile_values=[], quantile_scores=[])])[0, 0]
    assert np.all(np.diff(quantile) > 0)  # order kept, beyond the training range too
    # the outliers inflate the standard deviation, so ordinary values barely differ under (x - mean) / std ...
    assert standard[3] - standard[1] < 0.1
    # ... while normal scores keep them apart, as a tree ensemble's thresholds would
    assert quantile[3] - quantile[1] > 1.0 and abs(quantile[2]) < 0.2
    # beyond the last quantile values continue with slope 1 / std
    assert values[-1] == 2900 and quantile[5] == pytest.approx(scores[-1] + (5000 - 2900) / training.std(), rel=1e-5)
    invalid = normalize(band.copy(), np.zeros((1, 1, 6), bool), [spec])
    assert not invalid.any()


def test_quantile_tables_are_fitted_on_training_pixels_only(scene_dir):
    scene = open_scene(scene_dir)
    prepared, specs = prepare_scene(scene, ProtocolSpec(0.0, "both", 0), margin=5, normalization="quantile")
    with rasterio.open(scene_dir / "dsm.tif") as src:
        dsm = src.read(1).astype(np.float64)
    expected = quantile_table(dsm[scene.train_labels > 0])
    assert specs[0].normalization == "quantile" and specs[1].normalization == "quantile"
    assert specs[0].quantile_values[0] == pytest.approx(expected[0]) and specs[0].quantile_scores[0] == pytest.approx(expected[1])
    assert len(specs[1].quantile_values) == 8  # one table per band of the cube
    rows, cols = prepared.train.rows, prepared.train.cols
    dsm_scores = prepared.data[0, rows, cols]
    assert abs(float(np.median(dsm_scores))) < 0.1 and 0.8 < float(dsm_scores.std()) < 1.2


def test_a_quantile_model_carries_its_tables_to_mapping(scene_dir, tmp_path):
    model = tmp_path / "quantile.safetensors"
    trained = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--missing-rate", "0.5", "--normalization", "quantile",
                                              "-o", str(model), *CLI_FAST])
    assert trained.exit_code == 0, trained.output
    config = read_config(model)
    assert [m.normalization for m in config.model.modalities] == ["quantile", "quantile"] and config.train.normalization == "quantile"
    assert config.format_version == 4
    described = CliRunner().invoke(info.main, [str(model)])
    assert "dsm (1 band, quantile normalisation, " in described.output
    out = tmp_path / "map.tif"
    mapped = CliRunner().invoke(map_cli.main, ["--model", str(model), "--input", f"dsm={scene_dir / 'dsm.tif'}",
                                               "--input", f"hsi={scene_dir / 'hsi.tif'}", "-o", str(out), "--device", "cpu",
                                               "--progress", "none", "--quiet"])
    assert mapped.exit_code == 0, mapped.output
    with rasterio.open(out) as src:
        assert (src.read(1) > 0).all()


def test_a_model_is_written_in_the_oldest_format_that_reads_it_alike(model_file):
    config = read_config(model_file)
    assert config.file_format() == 4  # older mamol would read stored numbers where a raster declares a scale
    for modality in config.model.modalities:
        modality.as_declared = False
    assert config.file_format() == 2
    older = json.loads(config.to_json())  # as mamol 0.2.0 wrote it: no as_declared, and its files read stored numbers
    for modality in older["model"]["modalities"]:
        del modality["as_declared"]
    again = MamolConfig.from_json(json.dumps(older))
    assert again.format_version == 2 and not any(m.as_declared for m in again.model.modalities)
    assert MamolConfig.from_json(json.dumps(older | {"format_version": 4})).model.modalities[0].as_declared  # format 4's default
    config.model.modalities[0].quantile_values, config.model.modalities[0].quantile_scores = [[0.0, 1.0]], [[-1.0, 1.0]]
    assert json.loads(config.to_json())["format_version"] == 3  # mamol 0.2.0 read format 2 only, and would map with mean/std


@pytest.mark.parametrize("values, scores, normalization, problem", [
    ([[2.0, 1.0]], [[-1.0, 1.0]], "quantile", "quantile tables that are not one increasing, finite table per band"),
    ([[1.0, 2.0]], [[1.0, -1.0]], "quantile", "quantile tables that are not one increasing, finite table per band"),
    ([], [[-1.0, 1.0]], "quantile", "quantile tables that are not one increasing, finite table per band"),
    ([], [], "quantile", "'dsm' is normalised by standard scores, not the 'quantile' the model was trained with"),
    ([[1.0, 2.0]], [[-1.0, 1.0]], "standard", "'dsm' is normalised by quantile scores, not the 'standard'"),
    ([], [], "quantiles", "not the 'quantiles' the model was trained with"),
])
def test_an_altered_quantile_table_is_refused_in_one_line(model_file, values, scores, normalization, problem):
    data = json.loads(read_config(model_file).to_json())
    modality = data["model"]["modalities"][0]
    assert modality["name"] == "dsm"
    modality["quantile_values"], modality["quantile_scores"] = values, scores
    data["train"]["normalization"] = normalization
    if normalization == "quantile":  # the other modality is fine, so only the altered one is named
        other = data["model"]["modalities"][1]
        other["quantile_values"] = [[0.0, 1.0]] * other["bands"]
        other["quantile_scores"] = [[-1.0, 1.0]] * other["bands"]
    with pytest.raises(MamolError, match="model.safetensors: its embedded config was altered or damaged") as refused:
        MamolConfig.from_json(json.dumps(data), "model.safetensors")
    assert problem in str(refused.value) and "\n" not in str(refused.value)


def test_an_unknown_normalisation_is_refused(scene_dir):
    with pytest.raises(MamolError, match="normalisation 'quantiles' is not one of standard, quantile"):
        prepare_scene(open_scene(scene_dir), ProtocolSpec(0.0, "both", 0), margin=5, normalization="quantiles")
