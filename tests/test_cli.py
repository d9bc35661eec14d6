"""The commands: train, evaluate and describe a model; bad input stops with one line and writes nothing."""

import dataclasses
import json
import logging
import shutil

import pytest
import rasterio
from click.testing import CliRunner

from conftest import CLI_FAST, copy_with_config
from mamol_cli import evaluate, info, train
from mamol_cli import map as map_cli

FAST = CLI_FAST


def test_train_writes_model_and_report(model_file):
    report = model_file.with_suffix(".report")
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["results"]) == {"overall", "complete", "missing dsm", "missing hsi"}
    assert (report / "confusion.png").stat().st_size > 0
    assert (report / "confusion_overall.csv").read_text().startswith("reference \\ predicted,Grass,Trees")
    page = (report / "report.html").read_text()
    overall = metrics["results"]["overall"]
    assert f"Overall accuracy <b>{overall['oa']:.2f} %</b>, kappa <b>{overall['kappa']:.2f}</b>" in page
    assert "<td>dsm + hsi (all)</td>" in page and "<td>hsi only</td>" in page and "<td>dsm only</td>" in page
    complete = metrics["results"]["complete"]
    assert f"<td>dsm + hsi (all)</td><td>{complete['samples']}</td><td>{complete['oa']:.2f}</td>" in page
    assert "<td>Trees</td>" in page and 'src="data:image/png;base64,iVBOR' in page
    assert metrics["context"]["warnings"] == [] and "Warnings about the inputs" not in page


def test_a_training_report_keeps_the_warnings_given(scene_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(out), "--missing", "dsm", *FAST])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.report" / "metrics.json").read_text())
    assert [w for w in metrics["context"]["warnings"] if w.startswith("with 2 sensors, --missing dsm at rate 0.7 trains for 2 of their 3")]
    assert "maps from dsm alone use a combination the model never saw" in (tmp_path / "m.report" / "report.html").read_text()


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_training_log_names_the_precision_as_the_option_spells_it(scene_dir, tmp_path, precision, caplog):
    caplog.set_level(logging.INFO)
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"), "--no-eval",
                                             *FAST[:-1], "--epochs", "1", "--precision", precision])
    assert result.exit_code == 0 and f"device cpu, {precision}; " in caplog.text, caplog.text


def test_no_eval_trains_on_every_label_instead_of_holding_some_out(scene_dir, tmp_path, caplog):
    import geopandas

    caplog.set_level(logging.INFO)
    args = ["--input", f"dsm={scene_dir / 'dsm.tif'}", "--labels", str(scene_dir / "train_points.gpkg"), "--label-field", "landcover",
            "-o", str(tmp_path / "m.safetensors"), *FAST[:-1], "--epochs", "1"]
    held = CliRunner().invoke(train.main, [*args, "--no-eval", "--holdout", "0.3"])
    assert held.exit_code == 1 and "--holdout 0.3 keeps labels out of training for the accuracy report that --no-eval skips" in held.output
    assert not (tmp_path / "m.safetensors").exists()
    assert CliRunner().invoke(train.main, [*args, "--no-eval"]).exit_code == 0
    points = len(geopandas.read_file(scene_dir / "train_points.gpkg"))
    assert f"training on {points} pixels" in caplog.text and "held out" not in caplog.text
    caplog.clear()
    assert CliRunner().invoke(train.main, [*args, "--report", str(tmp_path / "report")]).exit_code == 0  # scored: holds out 30 %
    assert "held out by whole groups for testing" in caplog.text and f"training on {points} pixels" not in caplog.text


def test_more_expert_layers_than_blocks_is_said(scene_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    args = ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"), "--no-eval", *FAST, "--epochs", "1"]
    assert CliRunner().invoke(train.main, [*args, "--expert-layers", "50"]).exit_code == 0
    assert "--expert-layers 50: the backbone tiny has 2 blocks, so every one of them gets experts" in caplog.text
    caplog.clear()
    assert CliRunner().invoke(train.main, [*args, "--expert-layers", "2"]).exit_code == 0 and "--expert-layers" not in caplog.text


def test_tokenizer_width_is_an_option_saved_in_the_model_file(scene_dir, tmp_path):
    from safetensors import safe_open

    from mamol_core.modelfile.header import read_config

    out = tmp_path / "narrow.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(out), "--tokenizer-hidden", "8", "--no-eval", *FAST])
    assert result.exit_code == 0, result.output
    assert read_config(out).model.layout.hidden == 8
    with safe_open(str(out), "pt") as weights:
        assert weights.get_slice("tokenizers.0.pixels.0.weight").get_shape()[0] == 8


def test_eval_and_info(model_file, scene_dir, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(out),
                                                "--missing", "hsi", "--device", "cpu", "--progress", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"overall", "complete", "missing hsi"}
    assert metrics["context"]["warnings"] == [] and "Warnings about the inputs" not in (out / "report.html").read_text()
    dense = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(tmp_path / "dense"),
                                               "--mode", "dense", "--device", "cpu", "--progress", "none", "--quiet"])
    assert dense.exit_code == 0, dense.output
    dense_metrics = json.loads((tmp_path / "dense" / "metrics.json").read_text())
    assert dense_metrics["context"]["mode"] == "dense"
    assert dense_metrics["results"]["overall"]["samples"] == metrics["results"]["overall"]["samples"]
    described = CliRunner().invoke(info.main, [str(model_file)])
    assert "dsm (1 band, pixels of 2 m), hsi (8 bands, pixels of 2 m)" in described.output and "tokens of 2 px, tokenizer width 32, separate encoding" in described.output
    report = json.loads(model_file.with_suffix(".report").joinpath("metrics.json").read_text())["results"]
    assert f"accuracy in its report ({model_file.with_suffix('.report')}, {report['overall']['samples']} test pixels, pixel): " \
        f"OA {report['overall']['oa']:.2f}" in described.output
    complete = report["complete"]["samples"]
    assert f"complete {report['complete']['oa']:.2f} ({complete} px{', too few to judge' if complete < 100 else ''})" in described.output
    config = json.loads(CliRunner().invoke(info.main, [str(model_file), "--json"]).output)
    assert config["model"]["backbone"]["name"] == "tiny"
    checked = CliRunner().invoke(info.main, ["--check"])
    assert checked.exit_code == 0 and checked.output.startswith("mamol ") and " works: torch " in checked.output
    both = CliRunner().invoke(info.main, [str(model_file), "--check"])
    assert both.exit_code == 1 and "--check describes this environment, not a model" in both.output
    older = tmp_path / "older.safetensors"  # a model file of mamol 0.2.0 reads every band as stored
    copy_with_config(model_file, older, lambda c: c | {"format_version": 2} | {"model": c["model"] | {
        "modalities": [{k: v for k, v in m.items() if k not in ("as_declared", "unit", "band_names", "ground_pixel")}
                       for m in c["model"]["modalities"]]}})  # fields of later releases left out
    described = CliRunner().invoke(info.main, [str(older)])
    assert "accuracy in its report" not in described.output  # a copy without its report
    assert "format 2)" in described.output and "dsm (1 band, every band as stored: no scale, offset or alpha)" in described.output


def test_the_report_of_an_earlier_model_at_the_same_path_is_not_shown_as_this_ones(model_file, scene_dir, tmp_path):
    model, report = tmp_path / "m.safetensors", tmp_path / "m.report"
    model.write_bytes(model_file.read_bytes())
    shutil.copytree(model_file.with_suffix(".report"), report)
    assert "accuracy in its report (" in CliRunner().invoke(info.main, [str(model)]).output  # a copy with its report
    copy_with_config(model_file, model, lambda c: c | {"model": c["model"] | {"name": "retrained"}})  # another model at that path
    described = CliRunner().invoke(info.main, [str(model)])
    assert described.exit_code == 0 and "accuracy in its report" not in described.output, described.output
    assert f"accuracy: {report} is the report of an earlier model written to {model}, not this one's" in described.output
    hint = described.output.split("this one's; ")[1].split(" with the test data")[0].split()  # mamol-eval --model M -o R
    scored = CliRunner().invoke(evaluate.main, [*hint[1:], "--scene", str(scene_dir), "--quiet"])
    assert scored.exit_code == 0, scored.output  # the earlier model's training report is no longer protected
    assert "accuracy in its report (" in CliRunner().invoke(info.main, [str(model)]).output


def test_a_map_from_sensors_its_report_shows_weak_is_warned_about(model_file, scene_dir, tmp_path, caplog):
    model, report = tmp_path / "m.safetensors", tmp_path / "elsewhere"
    model.write_bytes(model_file.read_bytes())
    shutil.copytree(model_file.with_suffix(".report"), report)
    metrics = json.loads((report / "metrics.json").read_text())
    metrics["results"] |= {"complete": {"oa": 95.0, "samples": 5000}, "missing hsi": {"oa": 60.0, "samples": 900}}
    (report / "metrics.json").write_text(json.dumps(metrics))
    args = ["--model", str(model), "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", str(tmp_path / "map.tif"), "--estimate",
            "--progress", "none", "--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        assert CliRunner().invoke(map_cli.main, args).exit_code == 0  # no report beside the model: nothing to go by
        assert "weaker map" not in caplog.text
        assert CliRunner().invoke(map_cli.main, [*args, "--report", str(report)]).exit_code == 0
        assert "model scored 60.00 % overall accuracy from dsm on its test pixels (all sensors: 95.00 %); expect a weaker map from " \
            "this sensor" in caplog.text
        caplog.clear()
        shutil.move(report, model.with_suffix(".report"))  # beside the model: found without --report
        assert CliRunner().invoke(map_cli.main, args).exit_code == 0 and "60.00 % overall accuracy from dsm" in caplog.text
        caplog.clear()
        both = [*args, "--input", f"hsi={scene_dir / 'hsi.tif'}"]
        assert CliRunner().invoke(map_cli.main, both).exit_code == 0 and "weaker map" not in caplog.text  # every sensor
        with rasterio.open(scene_dir / "hsi.tif") as src:  # a hyperspectral strip over the top quarter
            profile, strip = src.profile | {"height": 10}, src.read()[:, :10]
        with rasterio.open(tmp_path / "strip.tif", "w", **profile) as dst:
            dst.write(strip)
        mapped = [arg for arg in args if arg != "--estimate"] + ["--input", f"hsi={tmp_path / 'strip.tif'}"]
        assert CliRunner().invoke(map_cli.main, mapped).exit_code == 0
        assert "% of the map (" in caplog.text and "px) was predicted from dsm alone, the other sensors given holding no data " \
            "there (map with --availability to see where): model scored 60.00 % overall accuracy from dsm" in caplog.text
        (tmp_path / "map.tif").unlink()
        for side in tmp_path.glob("map.*"):
            side.unlink()
    refused = CliRunner().invoke(map_cli.main, [*args, "--report", str(tmp_path)])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
    assert f"--report {tmp_path}: holds no report mamol wrote; give the folder of a report of {model}" in refused.output
    missing = CliRunner().invoke(map_cli.main, [*args, "--report", str(tmp_path / "gone")])
    assert missing.exit_code == 1 and f"--report {tmp_path / 'gone'}: is no folder; give the folder of a report" in missing.output
    copy_with_config(model_file, model, lambda c: c | {"model": c["model"] | {"name": "retrained"}})  # another model at that path
    earlier = CliRunner().invoke(map_cli.main, [*args, "--report", str(model.with_suffix(".report"))])
    assert earlier.exit_code == 1 and "holds an earlier model's report (written to the same model file)" in earlier.output
    assert not (tmp_path / "map.tif").exists()


def test_an_evaluation_on_the_models_own_training_labels_is_warned_about(model_file, scene_dir, tmp_path, caplog):
    from mamol_core.modelfile.header import read_config

    record = read_config(model_file).training_labels
    assert record.name == "train_labels.tif" and len(record.sha256) == 64
    assert ", on the labels of train_labels.tif" in CliRunner().invoke(info.main, [str(model_file)]).output
    common = ["--model", str(model_file), "--scene", str(scene_dir), "--device", "cpu", "--progress", "none"]
    with caplog.at_level(logging.WARNING):
        assert CliRunner().invoke(evaluate.main, [*common, "--labels", str(scene_dir / "train_labels.tif"), "-o", str(tmp_path / "own")]
                                  ).exit_code == 0
    told = f"{scene_dir / 'train_labels.tif'}: the model was trained on this file's labels (its training labels, train_labels.tif)"
    assert told in caplog.text
    assert any(told in line for line in json.loads((tmp_path / "own" / "metrics.json").read_text())["context"]["warnings"])
    caplog.clear()
    shutil.copy(scene_dir / "train_labels.tif", tmp_path / "copy.tif")  # the same labels under another name: the same content
    with caplog.at_level(logging.WARNING):
        assert CliRunner().invoke(evaluate.main, [*common, "--labels", str(tmp_path / "copy.tif"), "-o", str(tmp_path / "copy")]
                                  ).exit_code == 0
        assert "copy.tif: the model was trained on this file's labels" in caplog.text
        caplog.clear()
        assert CliRunner().invoke(evaluate.main, [*common, "-o", str(tmp_path / "test")]).exit_code == 0  # the scene's test labels
        assert "trained on this file's labels" not in caplog.text


def test_the_training_labels_record_tells_layers_and_fields_of_one_file_apart(scene_dir, tmp_path):
    """A project GeoPackage holding a training layer and a test layer: evaluating on its test layer is no evaluation on
    the training labels; the same layer and field is, whatever the file is called."""
    import geopandas

    from mamol_core.data.labels import labels_record

    points = geopandas.read_file(scene_dir / "train_points.gpkg")
    points["other"] = points["landcover"]
    points.to_file(tmp_path / "project.gpkg", layer="train", driver="GPKG")
    polygons = geopandas.read_file(scene_dir / "test_polygons.gpkg")
    polygons["truth"] = polygons["landcover"]
    polygons.to_file(tmp_path / "project.gpkg", layer="test", driver="GPKG")
    trained = labels_record(tmp_path / "project.gpkg", "other")
    assert (trained.layer, trained.field) == ("train", "other")
    tested = labels_record(tmp_path / "project.gpkg", "truth")
    assert tested.layer == "test" and not tested.same_labels(trained)  # the same file, its test layer
    shutil.copy(tmp_path / "project.gpkg", tmp_path / "renamed.gpkg")
    assert labels_record(tmp_path / "renamed.gpkg", "other").same_labels(trained)
    # the features copied to another file, layer and format, in another order (as QGIS saves a GeoPackage layer for mamol)
    points.sample(frac=1, random_state=0).to_file(tmp_path / "features.gpkg", layer="features", driver="GPKG")
    points.to_file(tmp_path / "points.shp")
    assert labels_record(tmp_path / "features.gpkg", "other").same_labels(trained)
    assert labels_record(tmp_path / "points.shp", "other").same_labels(trained)
    points.assign(other=points["other"].iloc[::-1].values).to_file(tmp_path / "relabelled.gpkg", layer="train", driver="GPKG")
    assert not labels_record(tmp_path / "relabelled.gpkg", "other").same_labels(trained)  # the same places, other classes
    older = dataclasses.replace(trained, features_sha256=None)  # a model of session 45 recorded no features
    assert not labels_record(tmp_path / "features.gpkg", "other").same_labels(older) and labels_record(tmp_path / "renamed.gpkg",
                                                                                                        "other").same_labels(older)


def test_eval_never_replaces_the_training_report(model_file, scene_dir):
    report = model_file.with_suffix(".report")
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    result = CliRunner().invoke(evaluate.main, ["--model", str(model_file), "--scene", str(scene_dir), "-o", str(report), "--quiet"])
    assert result.exit_code == 1 and f"-o {report}: holds this model's training report" in result.output, result.output
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before


def test_metrics_columns_keep_class_names_in_any_script_and_stay_unique():
    from mamol_core.evaluation.report import accuracy_columns

    assert accuracy_columns(["Forêt dense", "草地", "Grass", "grass", "?"]) == \
        ["acc_forêt_dense", "acc_草地", "acc_grass_3", "acc_grass_4", "acc_class"]
    columns = accuracy_columns(["Grass", "grass", "grass 2", "Fore\u0302t"])  # a numbered clash meets a name; a decomposed accent
    assert len(set(columns)) == 4 and columns[3] == "acc_forêt"


def test_eval_from_a_subset_of_the_sensors_scores_them_as_a_map_from_them(model_file, scene_dir, tmp_path, caplog):
    """A sensor not given is absent on every test pixel: the same scores as giving it and marking it missing everywhere."""
    common = ["--model", str(model_file), "--device", "cpu", "--progress", "none"]
    given = CliRunner().invoke(evaluate.main, [*common, "--scene", str(scene_dir), "--missing", "hsi", "--missing-rate", "1",
                                               "-o", str(tmp_path / "marked")])
    assert given.exit_code == 0, given.output
    caplog.set_level(logging.INFO)
    alone = CliRunner().invoke(evaluate.main, [*common, "--input", f"dsm={scene_dir / 'dsm.tif'}", "--labels",
                                               str(scene_dir / "test_labels.tif"), "-o", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output
    assert "hsi not given: absent on every test pixel, so the accuracy is that of a map from dsm (scored per combination of the sensors " \
        "given, where they hold data) (missing rate 0;" in caplog.text
    marked, scored = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("marked", "alone"))
    assert set(scored["results"]) == {"overall", "missing hsi"}
    assert " dsm only                     OA " in caplog.text and "missing hsi" not in caplog.text  # the sensors used, as the report says
    assert scored["results"]["overall"] == marked["results"]["overall"]
    assert scored["context"]["protocol"]["missing_rate"] == 0.0 and scored["context"]["modalities_given"] == ["dsm"]


def test_torch_says_nothing_at_info_even_when_a_command_stops_before_torch_is_loaded():
    """An interruption while torch loads used to print torch's FakeTensor cache statistics at exit."""
    import subprocess
    import sys

    code = ("import logging, sys; from mamol_cli.common import setup_logging; setup_logging(False); assert 'torch' not in sys.modules; "
            "print(logging.getLogger('torch._subclasses.fake_tensor').isEnabledFor(logging.INFO), "
            "logging.getLogger('matplotlib.font_manager').isEnabledFor(logging.INFO), "  # 'generated new fontManager'
            "logging.getLogger('mamol_core.mapping').isEnabledFor(logging.INFO))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "False", "True"]


def test_json_progress_lines(scene_dir, tmp_path):
    out = tmp_path / "m.safetensors"
    args = ["--scene", str(scene_dir), "-o", str(out), *FAST]
    args[args.index("--progress") + 1] = "json"
    result = CliRunner().invoke(train.main, args)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["stage"] == "evaluating" and lines[-1]["percent"] == 100.0
    assert any(line["stage"] == "training" and "loss" in line for line in lines)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scene", "/nonexistent/scene"], "error: /nonexistent/scene: no such scene folder"),
        (["--missing", "sar"], "--missing 'sar': 'sar' is not one of the modalities; use both, subsets, or names among dsm, hsi"),
        (["--backbone", "vit-huge"], "error: Invalid value for '--backbone': unknown backbone 'vit-huge'"),  # a usage error: exit 2
        (["--input", "broken"], "--input 'broken': write NAME=PATH"),
        (["-o", "model.pt"], "a model is a safetensors file; give it a .safetensors name"),
        (["-o", "model.pt", "--scene", "/nonexistent/scene"], "give it a .safetensors name"),  # refused before reading inputs
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(scene_dir, tmp_path, extra, message):
    out = tmp_path / "model.safetensors"
    args = ["--scene", str(scene_dir), "-o", str(out), *FAST, *(str(tmp_path / a) if a == "model.pt" else a for a in extra)]
    result = CliRunner().invoke(train.main, args)
    assert result.exit_code == (2 if "Invalid value" in message else 1)
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, given, message", [
    ("--scene", "hsi.tif", "hsi.tif: --scene takes a folder of rasters, this is a file; pass the folder that holds it "
                           "(mamol-train also takes single rasters as --input NAME=PATH)"),
    ("--labels", "folder", "folder: a folder that holds no vector layer GDAL reads; pass the file itself"),
    ("--labels", "text.gpkg", "text.gpkg: cannot be read as vector data ('"),
])
def test_a_file_for_a_folder_or_a_folder_for_a_file_is_named_as_such(scene_dir, tmp_path, flag, given, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.gpkg").write_text("not vector data")
    path = scene_dir / given if given == "hsi.tif" else tmp_path / given
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), flag, str(path), "-o", str(tmp_path / "m.safetensors"), *FAST])
    assert result.exit_code == 1 and message in result.output and "It might help" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("command, extra", [
    (train, ["--batch-size", "0"]), (train, ["--rank", "0"]), (train, ["--lr", "-1"]), (train, ["--holdout", "1.5"]),
    (train, ["--top-k", "3"]), (train, ["--missing-rate", "2"]), (train, ["--token-size", "0"]), (map_cli, ["--stride", "50"]), (map_cli, ["--batch-size", "-3"]), (map_cli, ["--min-valid", "2"]),
])
def test_numbers_out_of_range_are_refused_in_one_message(model_file, scene_dir, tmp_path, command, extra):
    if command is train:
        args = ["--scene", str(scene_dir), "-o", str(tmp_path / "m.safetensors"), *FAST, *extra]
    else:
        args = ["--model", str(model_file), "--input", f"dsm={scene_dir / 'dsm.tif'}", "-o", str(tmp_path / "m.tif"), "--device", "cpu", *extra]
    result = CliRunner().invoke(command.main, args)
    assert result.exit_code in (1, 2) and extra[0] in result.output and result.output.startswith("error: "), result.output
    assert len(result.output.strip().splitlines()) == 1 and isinstance(result.exception, SystemExit), result.output
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_as_a_model_and_a_malformed_var_say_what_they_are(tmp_path):
    from mamol_cli import bench

    result = CliRunner().invoke(info.main, [str(tmp_path)])
    assert result.exit_code == 1 and "is a folder, not a model file; pass the file written by mamol-train" in result.output
    result = CliRunner().invoke(bench.main, ["prepare", "--dataset", "trento", "--source", str(tmp_path), "--var", "foo", "-o", str(tmp_path / "s")])
    assert result.exit_code == 1 and "--var 'foo': write WHAT=FILE:VARIABLE, e.g. --var lidar=LiDAR.mat:LiDAR" in result.output


def test_usage_errors_are_one_line_and_no_arguments_still_show_the_help():
    from mamol_cli import bench

    for command, args in ((train, ["--bogus"]), (bench, ["bogus"]), (bench, ["run", "--rates"]), (evaluate, ["--mode", "x"]),
                          (bench, ["speed", "--backbones", ""])):
        result = CliRunner().invoke(command.main, args)
        assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert "Usage: mamol-bench" in CliRunner().invoke(bench.main, [], prog_name="mamol-bench").output


def test_unwritable_output_folder(scene_dir, tmp_path):
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(tmp_path / "no" / "m.safetensors"), *FAST])
    assert result.exit_code == 1 and "does not exist; create it" in result.output


def test_not_a_model_file(tmp_path):
    fake = tmp_path / "fake.safetensors"
    fake.write_text("hello world, not a model")
    result = CliRunner().invoke(info.main, [str(fake)])
    assert result.exit_code == 1 and "not a mamol model" in result.output


def test_model_of_the_previous_format_gets_one_line_that_says_how_to_retrain(model_file, scene_dir, tmp_path):
    from mamol_cli import map as map_cli

    def as_mamol_0_1(config: dict) -> dict:
        layout = config["model"].pop("layout")
        config["model"].update(patch_size=layout["patch_size"], tokenizer_hidden=layout["hidden"])
        del config["train"]["min_steps"]
        return config | {"mamol_version": "0.1.0", "format_version": 1}

    old = tmp_path / "old.safetensors"
    copy_with_config(model_file, old, as_mamol_0_1)
    before = sorted(tmp_path.iterdir())
    runs = [
        CliRunner().invoke(map_cli.main, ["--model", str(old), "--input", f"hsi={scene_dir / 'hsi.tif'}", "-o", str(tmp_path / "m.tif")]),
        CliRunner().invoke(evaluate.main, ["--model", str(old), "--scene", str(scene_dir), "-o", str(tmp_path / "report")]),
        CliRunner().invoke(info.main, [str(old)]),
    ]
    for result in runs:
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "old.safetensors was written by mamol 0.1.0 (model format 1)" in lines[0], result.output
        assert "retrain it on the same inputs with this mamol (mamol-train --input dsm=PATH --input hsi=PATH" in lines[0]
        assert ("--missing-rate 0.5 --missing both --backbone tiny --expert-layers 2 --placement last --rank 4 --dynamic-experts 2 "
                "--top-k 1 --epochs 3 --batch-size 128 --lr 0.002 --weight-decay 0.02 --seed 0 -o NEW.safetensors") in lines[0]
    assert sorted(tmp_path.iterdir()) == before
