"""mamol-bench: resumable grids, tables beside anchors and the paper, dataset preparation, routing plots."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.io import savemat

from conftest import edit_state
from mamol_cli import bench
from mamol_core.bench.grid import cpu_description
from mamol_core.config import LayoutSpec
from mamol_core.device import autocast_dtype
from mamol_core.errors import MamolError

FAST = ["--backbone", "tiny", "--patch-size", "6", "--token-size", "2", "--epochs", "1", "--min-steps", "0", "--progress", "none", "--quiet", "--device", "cpu"]


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_grid_resumes_and_tabulates_beside_an_anchor(scene_dir, tmp_path):
    args = ["run", "--scene", str(scene_dir), "--name", "synthetic", "--rates", "0.5,0.9", "--conditions", "dsm,both",
            "--methods", "mamol,no_dynamic", "--save-models", "-o", str(tmp_path), *FAST]
    assert CliRunner().invoke(bench.main, args).exit_code == 0
    first = rows(tmp_path / "results.csv")
    assert len(first) == 8 and {r["method"] for r in first} == {"mamol", "no_dynamic"}
    assert int(first[0]["trainable_params"]) > 0 and json.loads(first[0]["per_pattern_oa"])
    assert len(list((tmp_path / "models").glob("*.safetensors"))) == 8
    again = CliRunner().invoke(bench.main, args)
    assert again.exit_code == 0 and rows(tmp_path / "results.csv") == first
    anchor = tmp_path / "anchor.csv"
    anchor.write_text("dataset,missing_rate,condition,method,oa,kappa\nsynth,50,missing_both,RF,50.00,40.00\n")
    table = CliRunner().invoke(bench.main, ["table", "--results", str(tmp_path / "results.csv"), "--anchor", str(anchor),
                                            "--anchor-dataset", "synth", "--anchor-map", "both=missing_both"])
    line = next(line for line in table.output.splitlines() if line.startswith("| 50% | both"))
    ours = max(float(r["oa"]) for r in first if r["missing_rate"] == "0.5" and r["condition"] == "both")
    assert "50.00 / 40.00" in line and f"{ours - 50:+.2f}" in line
    winner = max((r for r in first if r["missing_rate"] == "0.5" and r["condition"] == "both"), key=lambda r: float(r["oa"]))
    assert f"| {winner['method']} |" in line and "Best OA in the 4 cells that every method finished (same seeds)" in table.output
    precision = "bf16" if autocast_dtype(torch.device("cpu")) == torch.bfloat16 else "fp32"  # this CPU's
    assert f"), {precision}: 8 runs." in table.output  # each device's runs counted with their precision


def test_table_sorts_rates_picks_methods_averages_seeds_and_leaves_unfinished_cells_without_a_winner(tmp_path, caplog):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,train_s,eval_s,eval_mode,device,hardware\n"
    row = "s,{rate},both,{method},{seed},tiny,5,1,{oa},10.00,{oa},1,dense,cpu,test\n"  # training took as many seconds as the OA
    results = tmp_path / "results.csv"
    results.write_text(header + row.format(rate=0.7, method="a", seed=0, oa=65) + row.format(rate=0.5, method="a", seed=0, oa=59)
                       + row.format(rate=0.5, method="b", seed=0, oa=70) + row.format(rate=0.5, method="c", seed=0, oa=90)
                       + row.format(rate=0.5, method="a", seed=1, oa=61) + row.format(rate=0.5, method="b", seed=1, oa=70)
                       + row.format(rate=0.9, method="a", seed=0, oa=80) + row.format(rate=0.9, method="a", seed=1, oa=82)
                       + row.format(rate=0.9, method="b", seed=0, oa=10))
    table = CliRunner().invoke(bench.main, ["table", "--results", str(results), "--methods", "b,a"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith("| missing rate | condition | b OA / κ | a OA / κ | best |") and "c OA" not in lines[0]
    assert lines[2].startswith("| 50% | both | 70.00 ± 0.00 / 10.00 (n=2) | 60.00 ± 1.41 / 10.00 (n=2) | b |")
    assert lines[3].startswith("| 70% | both |  | 65.00 / 10.00 |  |")
    assert lines[4].startswith("| 90% | both | 10.00 / 10.00 | 81.00 ± 1.41 / 10.00 (n=2) |  |")  # b has not run seed 1 yet
    assert "Best OA in the 1 cells that every method finished (same seeds): b 1, a 0 (b lacks seeds the others have in 2 of the 3 " \
           "cells: finish those runs, or leave it out with --methods)." in table.output
    assert "Mean OA over those cells: b 70.00, a 60.00." in table.output
    assert "Device: cpu (test), precision not recorded: 8 runs." in table.output  # a and b; c is not tabulated
    assert "(each method's mean over its runs; the table's columns average every method): b 50 / 1, a 69 / 1." in table.output
    assert lines[2].endswith("| 65 | 1 |")  # a 59, 61 and b 70, 70 in the 50 % cell (c is not tabulated)
    refused = CliRunner().invoke(bench.main, ["table", "--results", str(results), "--methods", "svm"])
    assert refused.exit_code == 1 and f"--methods svm: {results} holds no run of it; choose --methods among a, b, c" in refused.output
    one_dataset = tmp_path / "anchor.csv"
    one_dataset.write_text("dataset,missing_rate,condition,method,oa,kappa\nsynth,50,missing_both,RF,74.00,60.00\n")
    with_anchor = ["table", "--results", str(results), "--anchor", str(one_dataset)]
    anchored = CliRunner().invoke(bench.main, [*with_anchor, "--anchor-map", "both=missing_both"])
    assert anchored.exit_code == 0 and "| 74.00 / 60.00 |" in anchored.output, anchored.output  # its one dataset needs no --anchor-dataset
    typo = CliRunner().invoke(bench.main, [*with_anchor, "--anchor-map", "both=missing_bth"])
    assert typo.exit_code == 1 and "has no condition 'missing_bth' in that dataset; map to one of missing_both" in typo.output
    empty = tmp_path / "empty.csv"
    empty.write_text(header)
    nothing = CliRunner().invoke(bench.main, ["table", "--results", str(empty)])
    assert nothing.exit_code == 1 and f"{empty}: no run recorded yet; pass the results.csv" in nothing.output
    partly = CliRunner().invoke(bench.main, [*with_anchor, "--anchor-map", "both=missing_both,dsm=missing_dsm"])
    assert partly.exit_code == 0 and "| 74.00 / 60.00 |" in partly.output
    assert "--anchor-map: " in caplog.text and "has no condition 'missing_dsm' in that dataset (it has missing_both)" in caplog.text


def test_unknown_method_is_refused(scene_dir, tmp_path):
    result = CliRunner().invoke(bench.main, ["run", "--scene", str(scene_dir), "--methods", "svm", "-o", str(tmp_path), *FAST])
    assert result.exit_code == 1 and "unknown method svm" in result.output


def test_table_counts_the_cells_where_each_method_is_above_the_anchor(tmp_path):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,train_s,eval_s,eval_mode,device,hardware\n"
    row = "s,{rate},{condition},{method},{seed},tiny,5,1,{oa},10.00,3,1,pixel,cpu,test\n"
    results = tmp_path / "results.csv"
    results.write_text(header + "".join(row.format(rate=rate, condition=condition, method=method, seed=seed, oa=oa)
                                        for rate, condition, method, seed, oa in [
                                            (0.5, "both", "a", 0, 80), (0.5, "both", "a", 1, 70), (0.5, "both", "b", 0, 60),
                                            (0.5, "dsm", "a", 0, 50), (0.5, "dsm", "b", 0, 90), (0.9, "both", "a", 0, 99)]))
    anchor = tmp_path / "anchor.csv"
    anchor.write_text("dataset,missing_rate,condition,method,oa,kappa\nsynth,50,missing_both,RF,74.00,60.00\n"
                      "synth,50,missing_dsm,RF,70.00,60.00\n")
    table = CliRunner().invoke(bench.main, ["table", "--results", str(results), "--anchor", str(anchor), "--anchor-dataset", "synth",
                                            "--anchor-map", "both=missing_both,dsm=missing_dsm"])
    assert table.exit_code == 0, table.output
    # a: 75 > 74 (both), 50 < 70 (dsm), no anchor at 90 %; b: 60 < 74, 90 > 70
    assert "Cells where the mean OA is above the anchor's: a 1/2, b 1/2." in table.output
    assert "Mean OA over those cells: a 50.00, b 90.00; anchor 70.00." in table.output  # both, 50 %: b lacks seed 1


def test_paper_command_prepares_the_scene_and_writes_the_table(tmp_path):
    rng = np.random.default_rng(0)
    height, width = 24, 30
    truth = rng.integers(1, 16, (height, width))
    train = np.where(rng.random((height, width)) < 0.4, truth, 0)
    test = np.where(train == 0, truth, 0)
    source = tmp_path / "houston"
    source.mkdir()
    savemat(source / "HSI.mat", {"HSI": rng.random((height, width, 144)).astype(np.float32)})
    savemat(source / "LiDAR.mat", {"LiDAR": rng.random((height, width))})
    savemat(source / "TRLabel.mat", {"TRLabel": train.astype(np.uint8)})
    savemat(source / "TSLabel.mat", {"TSLabel": test.astype(np.uint8)})
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "paper_table1.csv").write_text("dataset,modalities,missing_rate,condition,hs_available,other_available,method,oa,kappa\n"
                                            "Houston13,HS+LiDAR,70,missing_hs,30,100,MaMOL,88.80,88.00\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(bench.main, ["paper", "--dataset", "houston2013", "--source", str(source), "--methods", "mamol",
                                             "--backbone", "tiny", "--epochs", "1", "--min-steps", "0", "--paper-numbers", str(papers), "-o", str(out),
                                             "--progress", "none", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert {(r["missing_rate"], r["condition"]) for r in rows(out / "results.csv")} == {
        (r, c) for r in ("0.5", "0.7", "0.9") for c in ("lidar", "hsi", "both")}
    line = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| 70% | hsi"))
    assert "[paper 88.80 / 88.00]" in line


def test_routing_plot_from_a_trained_model(scene_dir, tmp_path, monkeypatch):
    from mamol_core.mapping import dense

    run = ["run", "--scene", str(scene_dir), "--rates", "0.5", "--conditions", "both", "--methods", "mamol", "--save-models",
           "-o", str(tmp_path), *FAST]
    assert CliRunner().invoke(bench.main, run).exit_code == 0
    dtypes = []
    monkeypatch.setattr(dense, "inference_model", lambda model, dtype: dtypes.append(dtype) or model.to(dtype or torch.float32))
    model = next((tmp_path / "models").glob("*.safetensors"))
    out = tmp_path / "routing.png"
    result = CliRunner().invoke(bench.main, ["routing", "--model", str(model), "--scene", str(scene_dir), "--class-name", "Trees",
                                             "-o", str(out), "--device", "cpu", "--precision", "bf16", "--quiet"])
    assert result.exit_code == 0, result.output
    assert dtypes == [torch.bfloat16]  # cast once, in the precision asked for
    shares = json.loads(out.with_suffix(".json").read_text())
    assert set(shares) == {"complete", "missing dsm", "missing hsi"}
    for per_layer in shares.values():
        assert len(per_layer) == 2 and all(abs(sum(v) - 1) < 1e-6 for v in per_layer.values())
    assert out.read_bytes()[:4] == b"\x89PNG"
    inputs = {path: path.read_bytes() for path in scene_dir.iterdir()}
    for target, message in [(scene_dir / "classes.png", "classes.json: is the input the scene's class table"),
                            (scene_dir / "hsi.tif", "hsi.tif: is the input the scene's hsi raster"),
                            (tmp_path / "r.txt", "give the picture one of the extensions"),
                            (tmp_path / "no" / "r.png", "does not exist; create it")]:
        refused = CliRunner().invoke(bench.main, ["routing", "--model", str(model), "--scene", str(scene_dir), "-o", str(target),
                                                  "--device", "cpu", "--quiet"])
        assert refused.exit_code == 1 and message in refused.output and len(refused.output.strip().splitlines()) == 1, refused.output
    assert {path: path.read_bytes() for path in scene_dir.iterdir()} == inputs and not (tmp_path / "r.json").exists()


def test_speed_prints_mapping_training_and_forest_in_one_table(tmp_path):
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(bench.main, ["speed", "--side", "40", "--bands", "3", "--backbones", "tiny", "--patch-size", "8",
                                             "--token-size", "4", "--tokenizer-hidden", "8", "--train-steps", "1", "--device", "cpu", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "tokens of 4 px, tokenizer width 8, untrained weights" in result.output
    figures = json.loads(out.read_text())
    assert figures["side"] == 40 and figures["layout"]["token_size"] == 4 and figures["hardware"]
    assert figures["mapping_mpx_s"]["tiny"] > 0 and figures["training_steps_s"]["tiny"] > 0 and figures["forest_mpx_s"] > 0
    assert figures["ratio_to_forest"]["tiny"] == pytest.approx(figures["mapping_mpx_s"]["tiny"] / figures["forest_mpx_s"])
    assert figures["training_samples_s"]["tiny"] == pytest.approx(128 * figures["training_steps_s"]["tiny"])
    lines = result.output.splitlines()
    assert lines[0].startswith("Hardware: ") and any(line.startswith("| MaMOL, tiny |") for line in lines)
    assert any(line.startswith("| random forest, 300 trees, 11 x 11 patches |") for line in lines)


def test_grid_refuses_a_results_file_of_other_columns_or_another_setup(scene_dir, tmp_path):
    out = tmp_path / "grid"
    out.mkdir()
    (out / "results.csv").write_text("scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa\n")
    args = ["run", "--scene", str(scene_dir), "--rates", "0.5", "--conditions", "both", "-o", str(out), *FAST]
    result = CliRunner().invoke(bench.main, args)
    assert result.exit_code == 1 and "holds other columns than mamol-bench run writes" in result.output
    (out / "results.csv").unlink()
    assert CliRunner().invoke(bench.main, args).exit_code == 0
    again = CliRunner().invoke(bench.main, args + ["--validation", "0.3"])
    assert again.exit_code == 1 and "holds cells of another setup (split test (this grid: validation))" in again.output
    fields = CliRunner().invoke(bench.main, args + ["--validation", "0.3", "--validation-unit", "fields"])
    assert fields.exit_code == 1 and "(split test (this grid: validation-fields))" in fields.output
    narrow = CliRunner().invoke(bench.main, args + ["--tokenizer-hidden", "8"])
    assert narrow.exit_code == 1 and f"tokenizer_hidden {LayoutSpec.hidden} (this grid: 8)" in narrow.output
    assert rows(out / "results.csv")[0]["tokenizer_hidden"] == str(LayoutSpec.hidden)
    assert rows(out / "results.csv")[0]["normalization"] == "standard" and rows(out / "results.csv")[0]["precision"] in ("bf16", "fp32")
    quantile = CliRunner().invoke(bench.main, args + ["--normalization", "quantile"])
    assert quantile.exit_code == 1 and "normalization standard (this grid: quantile)" in quantile.output
    slower = CliRunner().invoke(bench.main, args + ["--expert-lr-scale", "0.25"])
    assert slower.exit_code == 1 and "expert_lr_scale 1 (this grid: 0.25)" in slower.output
    smaller = CliRunner().invoke(bench.main, args + ["--rank", "2"])
    assert smaller.exit_code == 1 and "rank 8 (this grid: 2)" in smaller.output
    # A results file from before the tokenizer_hidden, normalization, expert_lr_scale, rank and precision columns (width
    # 256, standard normalisation, one learning rate and rank 8 then, precision not recorded) gains them and resumes.
    written = rows(out / "results.csv")
    added = ("tokenizer_hidden", "normalization", "expert_lr_scale", "rank", "precision")
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f for f in written[0] if f not in added])
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k not in added} for row in written)
    resumed = CliRunner().invoke(bench.main, args + ["--tokenizer-hidden", "256"])
    assert resumed.exit_code == 0, resumed.output
    migrated = rows(out / "results.csv")
    assert [(r["tokenizer_hidden"], r["normalization"], r["expert_lr_scale"], r["rank"], r["precision"]) for r in migrated] == \
        [("256", "standard", "1", "8", "")] * len(written)
    assert [r["oa"] for r in migrated] == [r["oa"] for r in written]  # resumed: no cell added, nothing else changed
    # One from after tokenizer_hidden but before normalization and precision (the committed docs/results files).
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f for f in migrated[0] if f not in added[1:]])
        writer.writeheader()
        writer.writerows({k: v for k, v in row.items() if k not in added[1:]} for row in migrated)
    assert CliRunner().invoke(bench.main, args + ["--tokenizer-hidden", "256"]).exit_code == 0
    assert rows(out / "results.csv") == migrated
    whole = (out / "results.csv").read_bytes()
    for damaged, message in ((whole + b"\xe9\xe9\n", "not a CSV text file (UnicodeDecodeError)"),  # a stray binary tail
                             (whole[: whole.index(b"\n") + 60], "line 2: the row is cut short (no line end)"),
                             (whole[: whole.index(b"\n") + 60] + b"\n", "line 2: the row has fewer or more fields than the header"),
                             (whole[:-1], "line 2: the row is cut short (no line end)"),  # the next row would join it
                             (b"a,b\n1,2\n", "holds other columns than mamol-bench run writes")):  # another tool's file
        (out / "results.csv").write_bytes(damaged)
        result = CliRunner().invoke(bench.main, args + ["--tokenizer-hidden", "256"])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and (out / "results.csv").read_bytes() == damaged
    wide = CliRunner().invoke(bench.main, args[:-2] + ["--eval-mode", "dense@7", "-o", str(tmp_path / "other"), *FAST])
    assert wide.exit_code == 1 and "the stride must not exceed the tile side (6 px)" in wide.output


def test_grid_rank_sizes_every_expert_and_is_recorded_and_tabulated(scene_dir, tmp_path):
    args = ["run", "--scene", str(scene_dir), "--rates", "0.5", "--conditions", "both", "--methods", "mamol,moe_ada,baseline", *FAST]
    assert CliRunner().invoke(bench.main, args + ["-o", str(tmp_path / "r8")]).exit_code == 0
    small = CliRunner().invoke(bench.main, args + ["--rank", "2", "-o", str(tmp_path / "r2")])
    assert small.exit_code == 0, small.output
    default = {r["method"]: r for r in rows(tmp_path / "r8" / "results.csv")}
    ranked = {r["method"]: r for r in rows(tmp_path / "r2" / "results.csv")}
    assert {r["rank"] for r in default.values()} == {"8"} and {r["rank"] for r in ranked.values()} == {"2"}
    for method in ("mamol", "moe_ada"):  # the experts shrink; nothing else does
        assert int(ranked[method]["trainable_params"]) < int(default[method]["trainable_params"])
    assert ranked["baseline"]["trainable_params"] == default["baseline"]["trainable_params"]
    table = CliRunner().invoke(bench.main, ["table", "--results", str(tmp_path / "r2" / "results.csv")])
    assert table.exit_code == 0 and ", LoRA rank 2, 1 epochs" in table.output
    assert "LoRA rank" not in CliRunner().invoke(bench.main, ["table", "--results", str(tmp_path / "r8" / "results.csv")]).output


def test_cpu_description_names_the_first_processor_with_its_family_and_model():
    zen4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n" \
           "processor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: other\n"
    assert cpu_description(zen4) == "AMD EPYC, family 25 model 17"
    assert cpu_description("processor\t: 0\nmodel name\t: Some CPU\n") == "Some CPU"
    assert cpu_description("processor\t: 0\nBogoMIPS\t: 50.00\n") is None


def test_validation_split_scores_held_out_training_labels_in_several_modes(scene_dir, tmp_path):
    out = tmp_path / "val"
    result = CliRunner().invoke(bench.main, ["run", "--scene", str(scene_dir), "--rates", "0.5", "--conditions", "both",
                                             "--validation", "0.3", "--eval-mode", "pixel,dense@6,dense@3", "-o", str(out), *FAST])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["split"] == "validation" and row["token_size"] == "2" and row["min_steps"] == "0" and row["eval_mode"] == "pixel"
    modes = json.loads(row["oa_by_mode"])
    assert set(modes) == {"pixel", "dense@6", "dense@3"} and modes["pixel"] == float(row["oa"])
    assert int(row["steps"]) in (1, 2)  # one epoch over about 70 % of 180 training pixels, batches of 128


def test_validation_split_holds_out_whole_blocks_of_training_labels_only(scene_dir):
    from mamol_core.bench.grid import VALIDATION_BLOCK, validation_scene
    from mamol_core.data.scene import open_scene

    scene = open_scene(scene_dir)
    split = validation_scene(scene, 0.3, seed=1)
    train, held_out = split.train_labels, split.test_labels
    assert not ((train > 0) & (held_out > 0)).any()
    assert np.array_equal(np.where(train > 0, train, held_out), scene.train_labels)
    held_blocks = {(r // VALIDATION_BLOCK, c // VALIDATION_BLOCK) for r, c in zip(*np.nonzero(held_out))}
    train_blocks = {(r // VALIDATION_BLOCK, c // VALIDATION_BLOCK) for r, c in zip(*np.nonzero(train))}
    assert held_blocks and not held_blocks & train_blocks
    for value in np.unique(scene.train_labels[scene.train_labels > 0]):
        assert (held_out == value).sum() <= 0.5 * (scene.train_labels == value).sum()


def test_block_holdout_reaches_the_share_per_class_and_keeps_half_for_training():
    from mamol_core.data.labels import block_holdout

    rng = np.random.default_rng(0)
    labels = np.zeros((200, 300), np.uint8)
    for _ in range(120):
        r, c = rng.integers(0, 195), rng.integers(0, 295)
        labels[r : r + 4, c : c + 4] = rng.integers(1, 5)
    train, held = block_holdout(labels, 0.25, 16, seed=3)
    for value in range(1, 5):
        total, taken = (labels == value).sum(), (held == value).sum()
        assert 0.2 * total <= taken <= 0.5 * total
    assert not np.array_equal(block_holdout(labels, 0.25, 16, seed=4)[1], held)


def test_field_validation_holds_out_whole_fields_of_every_class_and_keeps_one():
    from scipy import ndimage

    from mamol_core.data.labels import validation_holdout

    labels = np.zeros((60, 90), np.uint8)
    for index, (r, c) in enumerate((r, c) for r in range(2, 60, 12) for c in range(2, 90, 12)):
        labels[r : r + 5, c : c + 5] = 1 + index % 3  # 8 x 5 fields of 25 px, classes 1-3 in turn
    labels[55:58, 80:88] = 4  # a class with one field: kept for training
    train, held = validation_holdout(labels, 0.25, seed=1, unit="fields")
    assert np.array_equal(np.where(train > 0, train, held), labels) and not ((train > 0) & (held > 0)).any()
    fields, count = ndimage.label(labels > 0)
    for field in range(1, count + 1):  # no field on both sides
        inside = fields == field
        assert (held[inside] > 0).all() or not (held[inside] > 0).any()
    for value in (1, 2, 3):
        assert 0 < (held == value).sum() < (labels == value).sum()
    assert not (held == 4).any()
    assert not np.array_equal(validation_holdout(labels, 0.25, seed=2, unit="fields")[1], held)
    with pytest.raises(MamolError, match="validation unit 'rows': use blocks or fields"):
        validation_holdout(labels, 0.25, seed=1, unit="rows")


def test_a_field_split_keeps_half_of_each_class_and_diagonal_neighbours_together():
    from mamol_core.data.labels import validation_holdout

    labels = np.zeros((60, 60), np.uint8)
    labels[2:42, 2:27] = 1  # a field of 1000 px ...
    labels[50:52, 50:55] = 1  # ... and one of 10 px: only the small one can be held out
    for step in range(20):  # a diagonal row of 20 px, touching only at corners: one field
        labels[30 + step, 30 + step] = 2
    labels[5:10, 40:45] = 2
    for seed in range(8):
        train, held = validation_holdout(labels, 0.25, seed=seed, unit="fields")
        assert (held == 1).sum() == 10 and (train == 1).sum() == 1000
        diagonal = held[30:50, 30:50][np.eye(20, dtype=bool)]
        assert (diagonal > 0).all() or not (diagonal > 0).any()


def test_a_validation_split_with_nothing_to_hold_out_is_refused_before_training():
    from mamol_core.bench.grid import validation_scene
    from mamol_core.data.scene import Scene

    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6], labels[10:14, 10:14] = 1, 2  # every class is one field
    scene = Scene(modalities=[], grid=None, train_labels=labels, test_labels=None, classes=[])
    with pytest.raises(MamolError, match="no validation fields to hold out .*try --validation-unit blocks"):
        validation_scene(scene, 0.25, 0, "fields")


@pytest.mark.parametrize("option, value, message", [("--rates", "70", "--rates 70: give missing rates between 0 and 1"),
                                                    ("--rates", "x", "--rates x: give missing rates"),
                                                    ("--seeds", "a", "--seeds a: give whole numbers"),
                                                    ("--conditions", "both,lidar", "--conditions lidar: not a missing condition of dsm, hsi"),
                                                    ("--rates", "0.5,0.50", "--rates 0.5,0.50: 0.5 is given more than once"),
                                                    ("--methods", "mamol,mamol", "--methods mamol,mamol: mamol is given more than once"),
                                                    ("--seeds", "", "--seeds '': give at least one value"),
                                                    ("--conditions", " , ", "--conditions ' , ': give at least one value")])
def test_grid_values_no_cell_can_run_are_refused_by_their_option_before_training(scene_dir, tmp_path, option, value, message):
    result = CliRunner().invoke(bench.main, ["run", "--scene", str(scene_dir), "--name", "s", "--methods", "mamol", option, value,
                                             "-o", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "out").exists()  # no folder made either


def test_a_grid_stopped_by_a_damaged_input_leaves_no_folder_behind(scene_dir, tmp_path):
    damaged = tmp_path / "scene"
    shutil.copytree(scene_dir, damaged)
    whole = (damaged / "hsi.tif").read_bytes()
    (damaged / "hsi.tif").write_bytes(whole[: len(whole) * 2 // 3])  # its header reads, its pixels do not
    result = CliRunner().invoke(bench.main, ["run", "--scene", str(damaged), "--rates", "0.5", "--save-models", "-o",
                                             str(tmp_path / "runs" / "out"), *FAST])
    assert result.exit_code == 1 and "hsi.tif" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "runs").exists()  # nor the folder above it that the run made


def test_an_early_stopping_share_the_labels_cannot_give_is_refused_before_training():
    from mamol_core.bench.grid import Grid, check_grid_scene
    from mamol_core.data.scene import Scene

    labels = np.zeros((20, 20), np.uint8)
    labels[2:6, 2:6], labels[10:14, 10:14] = 1, 2  # one 32-pixel block holds every label
    scene = Scene(modalities=[], grid=None, train_labels=labels, test_labels=None, classes=[])
    check_grid_scene(Grid(["0.5"], ["both"], ["mamol"], ["0"], [], "tiny"), scene)
    with pytest.raises(MamolError, match=r"--early-stopping 0.25: .* too few or too clustered .*\(seed 0\).*without --early-stopping"):
        check_grid_scene(Grid(["0.5"], ["both"], ["mamol"], ["0"], [], "tiny", early_stopping=0.25), scene)


def test_table_refuses_files_it_cannot_read_and_an_output_that_is_an_input(tmp_path):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,train_s,eval_s,eval_mode,device,hardware\n"
    results = tmp_path / "results.csv"
    results.write_text(header + "s,0.5,both,a,0,tiny,5,1,60,10.00,3,1,pixel,cpu,test\n")
    (tmp_path / "columns.csv").write_text("a,b\n1,2\n")
    (tmp_path / "number.csv").write_text(header + "s,0.5,both,a,0,tiny,5,1,sixty,10.00,3,1,pixel,cpu,test\n")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81" * 8)
    (tmp_path / "anchor.csv").write_text("dataset,missing_rate,condition,method,oa,kappa\ntrento,50,both,rf,80,70\n")
    (tmp_path / "anchors.csv").write_text("dataset,missing_rate,condition,method,oa,kappa\n"
                                          "trento,50,both,rf,80,70\nhouston,50,both,rf,70,60\n")
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    cases = [(["--results", str(tmp_path / "columns.csv")], "columns.csv: has no column scene, missing_rate"),
             (["--results", str(tmp_path / "number.csv")], "number.csv: line 2: oa is 'sixty', not a number"),
             (["--results", str(tmp_path / "binary.csv")], "binary.csv: not a CSV text file"),
             (["--results", str(results), "--anchor", str(results)], "results.csv: has no column dataset; pass an anchor CSV"),
             (["--results", str(results), "-o", str(results)], "is the input --results"),
             (["--results", f"r={results}", "-o", str(results)], "is the input --results"),
             (["--results", str(results), "-o", str(tmp_path / "no" / "t.md")], "does not exist; create it"),
             (["--results", str(results), "-o", str(tmp_path)], "is a folder; give a file name"),
             (["--results", str(results), "--anchor-map", "both=missing_both"], "--anchor-map says how to read --anchor's file"),
             (["--results", str(tmp_path)], f"{tmp_path}: is a folder; give the file ({results} is there)"),
             (["--results", str(results), "--paper-dataset", "Trento"], "--paper-dataset says how to read --paper's file"),
             (["--results", str(results), "--anchor", str(tmp_path / "anchor.csv"), "--anchor-dataset", "houston"],
              "anchor.csv: no rows of the dataset 'houston'; give --anchor-dataset, one of trento"),
             (["--results", str(results), "--anchor", str(tmp_path / "anchors.csv")], "anchors.csv: give --anchor-dataset, one of trento, houston"),
             (["--results", str(results), "--anchor", str(tmp_path / "anchor.csv"), "--anchor-dataset", "trento", "--anchor-map", "both"],
              "--anchor-map both: 'both' is no pair; write OURS=THEIRS")]
    for args, message in cases:
        result = CliRunner().invoke(bench.main, ["table", *args])
        assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1, (args, result.output)
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_table_reports_an_undefined_kappa_as_such(tmp_path):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,train_s,eval_s,eval_mode,device,hardware\n"
    results = tmp_path / "results.csv"
    results.write_text(header + "s,0.5,both,a,0,tiny,5,1,100.00,undefined,3,1,pixel,cpu,test\n"
                       + "s,0.5,both,a,1,tiny,5,1,90.00,80.00,3,1,pixel,cpu,test\n")
    table = CliRunner().invoke(bench.main, ["table", "--results", str(results)])
    assert table.exit_code == 0, table.output
    assert "| 50% | both | 95.00 ± 7.07 / undefined (n=2) | a |" in table.output


def test_grid_refuses_training_and_test_labels_that_share_pixels(scene_dir, tmp_path):
    import shutil

    import rasterio

    scene = tmp_path / "scene"
    shutil.copytree(scene_dir, scene)
    with rasterio.open(scene / "train_labels.tif") as src:
        train = src.read(1)
    with rasterio.open(scene / "test_labels.tif", "r+") as dst:
        test = dst.read(1)
        shared = np.argwhere(train > 0)[0]
        test[tuple(shared)] = train[tuple(shared)]
        dst.write(test, 1)
    result = CliRunner().invoke(bench.main, ["run", "--scene", str(scene), "-o", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 1 and "test_labels.tif: shares 1 labelled pixels with" in result.output
    assert "disjoint" in result.output and not (tmp_path / "out" / "results.csv").exists()


def test_table_leads_with_per_pixel_oa_shows_dense_beside_it_and_counts_paired_wins(tmp_path):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,oa_by_mode,train_s,eval_s,eval_mode,device,hardware\n"

    def row(method, seed, dense, pixel):
        return f's,0.5,both,{method},{seed},tiny,6,1,{dense},50.00,"{{""dense"": {dense}, ""pixel"": {pixel}}}",3,1,dense,cpu,test\n'

    results = tmp_path / "results.csv"
    results.write_text(header + row("a", 0, 80, 70) + row("a", 1, 82, 74) + row("b", 0, 90, 72) + row("b", 1, 60, 71))
    table = CliRunner().invoke(bench.main, ["table", "--results", str(results)])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[2].startswith("| 50% | both | 72.00 ± 2.83 / n/a (n=2) | 71.50 ± 0.71 / n/a (n=2) | a |")
    assert "Headline: `pixel` evaluation." in table.output
    assert "| a | — | 1/2 (+0.50 ± 2.50) |" in table.output and "| b | 1/2 (-0.50 ± 2.50) | — |" in table.output  # (−2, +3)
    dense = table.output.split("`dense` evaluation")[1]
    assert "| 50% | both | 81.00 ± 1.41 | 75.00 ± 21.21 |" in dense


def test_table_compares_the_same_method_in_two_labelled_results_files_run_by_run(tmp_path):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,train_s,eval_s,eval_mode,device,hardware\n"
    row = "s,0.5,{condition},mamol,{seed},{backbone},12,1,{oa},50.00,3,1,pixel,cpu,test\n"
    old, new = tmp_path / "old.csv", tmp_path / "new=grid.csv"  # an '=' in a file's own name is read as part of the path
    old.write_text(header + "".join(row.format(condition=c, seed=s, backbone="deep", oa=oa)
                                    for c, s, oa in [("both", 0, 70), ("both", 1, 80), ("dsm", 0, 60)]))
    new.write_text(header + "".join(row.format(condition=c, seed=s, backbone="shallow", oa=oa)
                                    for c, s, oa in [("both", 0, 74), ("both", 1, 79), ("dsm", 0, 66)]))
    table = CliRunner().invoke(bench.main, ["table", "--results", f"d6={old}", "--results", f"d3={new}", "--methods", "d3:mamol,d6:mamol"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith("| missing rate | condition | d3:mamol OA / κ | d6:mamol OA / κ | best |")
    assert lines[2].startswith("| 50% | both | 76.50 ± 3.54 / 50.00 (n=2) | 75.00 ± 7.07 / 50.00 (n=2) | d3:mamol |")
    assert "| d3:mamol | — | 2/3 (+3.00 ± 2.08) |" in table.output  # +4, −1, +6
    assert "d3: shallow, patch 12" in table.output and "d6: deep, patch 12" in table.output
    methods = CliRunner().invoke(bench.main, ["table", "--results", f"d6={old}", "--results", f"d3={new}", "--methods", "mamol"])
    assert methods.exit_code == 1 and "choose --methods among d6:mamol, d3:mamol" in methods.output


@pytest.mark.parametrize("specs, message", [
    (["{old}", "{new}"], "{new}: holds mamol's run at 0.5 / both / seed 0 twice: so does {old}; give the files different labels"),
    (["a={old}", "a={new}"], "a={new}: holds a:mamol's run at 0.5 / both / seed 0 twice: so does a={old}"),
    (["{twice}"], "{twice}: holds mamol's run at 0.5 / both / seed 0 twice: it was written twice; keep one of its rows"),
    (["{tmp}/lr=0.2/results.csv"], "{tmp}/lr=0.2/results.csv: no such results file"),  # '=' in a folder's name, not a label
    (["d 3={old}"], "d 3={old}: no such results file; pass the results.csv that mamol-bench run wrote, or LABEL=results.csv"),
    (["d3="], "d3=: give a results file after the label"),
])
def test_table_refuses_a_run_found_twice_and_names_a_missing_file_as_given(tmp_path, specs, message):
    header = "scene,missing_rate,condition,method,seed,backbone,patch_size,epochs,oa,kappa,train_s,eval_s,eval_mode,device,hardware\n"
    row = "s,0.5,both,mamol,0,tiny,12,1,70,50.00,3,1,pixel,cpu,test\n"
    names = {"old": tmp_path / "old.csv", "new": tmp_path / "new.csv", "twice": tmp_path / "twice.csv", "tmp": tmp_path}
    names["old"].write_text(header + row)
    names["new"].write_text(header + row)
    names["twice"].write_text(header + row + row)
    other_scene = tmp_path / "other_scene.csv"  # the same cell and seed of another scene is another run
    other_scene.write_text(header + row + row.replace("s,", "t,", 1))
    assert CliRunner().invoke(bench.main, ["table", "--results", str(other_scene)]).exit_code == 0
    result = CliRunner().invoke(bench.main, ["table", *[arg for spec in specs for arg in ("--results", spec.format(**names))]])
    assert result.exit_code == 1 and message.format(**names) in result.output and "Traceback" not in result.output


def test_speed_compares_one_and_two_torchrun_processes(tmp_path):
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(bench.main, ["speed", "--side", "40", "--bands", "3", "--backbones", "tiny", "--patch-size", "8",
                                             "--token-size", "4", "--train-steps", "1", "--device", "cpu", "--precision", "fp32",
                                             "--processes", "1,2", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    scaling = json.loads(out.read_text())["scaling"]
    assert list(scaling) == ["1", "2"] and all(f["mapping_mpx_s"] > 0 and f["training_samples_s"] > 0 for f in scaling.values())
    lines = result.output.splitlines()
    assert any(line.startswith("| 1 | ") and "| 1x |" in line for line in lines) and any(line.startswith("| 2 | ") for line in lines)
    bad = CliRunner().invoke(bench.main, ["speed", "--processes", "0,two", "--device", "cpu"])
    assert bad.exit_code == 1 and "--processes 0,two: give process counts" in bad.output


def test_a_grid_stopped_during_training_continues_the_cell_from_its_state(scene_dir, tmp_path, monkeypatch):
    """Ctrl-C in a cell's training keeps its state under states/; the same command continues that cell
    at the step it reached and writes the row an uninterrupted grid writes (timings aside)."""
    import os
    import signal

    from mamol_core.modelfile.header import read_metadata
    from mamol_core.progress import RecordProgress
    from mamol_core.training import loop
    from mamol_core.training.state import STATE_KEY

    monkeypatch.setattr(loop, "counter", lambda total, desc, unit, mode: RecordProgress(total, desc, unit, mode, interval=0.0))
    args = ["run", "--scene", str(scene_dir), "--name", "synthetic", "--rates", "0.5", "--conditions", "both", "--methods", "mamol",
            *FAST, "--epochs", "3"]
    straight = CliRunner().invoke(bench.main, [*args, "-o", str(tmp_path / "straight")], obj={"progress": lambda record: None})
    assert straight.exit_code == 0, straight.output
    steps = []

    def stop_at_step_4_of_the_second_cell(record):
        if record.get("stage") == "training":
            steps.append(record["done"])
            if record["done"] == 4 and steps.count(0) == 2:
                os.kill(os.getpid(), signal.SIGINT)

    grid = [*args, "-o", str(tmp_path / "grid"), "--seeds", "1,0"]
    stopped = CliRunner().invoke(bench.main, grid, obj={"progress": stop_at_step_4_of_the_second_cell})
    assert stopped.exit_code == 130 and len(rows(tmp_path / "grid" / "results.csv")) == 1  # seed 1's row; seed 0 stopped
    assert f"kept {tmp_path / 'grid' / 'results.csv'}" in stopped.output
    (state,) = (tmp_path / "grid" / "states").iterdir()
    assert state.name == "synthetic_mamol_both_0.5_s0.state.safetensors"
    kept = json.loads(read_metadata(state)[STATE_KEY])
    assert kept["step"] == 4 and kept["seconds"] > 0 and kept["cpu_seconds"] > 0
    edit_state(state, lambda meta: meta.update(seconds=5000.0, cpu_seconds=9000.0))  # as if it had trained long before the stop
    steps.clear()

    def record_steps(record):
        if record.get("stage") == "training":
            steps.append(record["done"])

    continued = CliRunner().invoke(bench.main, grid, obj={"progress": record_steps})
    assert continued.exit_code == 0 and steps[0] == 4, continued.output
    assert not (tmp_path / "grid" / "states").exists()  # removed with its last state
    timing = {"train_s", "eval_s", "cpu_s"}
    (a,), (_, b) = rows(tmp_path / "straight" / "results.csv"), rows(tmp_path / "grid" / "results.csv")
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert 5000 <= int(b["train_s"]) < 5100 and 9000 <= int(b["cpu_s"]) < 9100  # the earlier process's time counts


def test_a_grid_replaces_a_state_of_other_settings_and_drops_those_of_finished_cells(scene_dir, tmp_path):
    args = ["run", "--scene", str(scene_dir), "--name", "synthetic", "--rates", "0.5", "--conditions", "both", "--methods", "mamol",
            *FAST, "-o", str(tmp_path)]
    states = tmp_path / "states"
    states.mkdir()
    foreign = states / "synthetic_mamol_both_0.5_s0.state.safetensors"
    foreign.write_bytes(b"not a state")
    assert CliRunner().invoke(bench.main, args).exit_code == 0 and len(rows(tmp_path / "results.csv")) == 1
    assert not states.exists()
    states.mkdir()
    foreign.write_bytes(b"left after the row was written")
    assert CliRunner().invoke(bench.main, args).exit_code == 0 and not states.exists()
    (tmp_path / "states").write_text("a file")
    refused = CliRunner().invoke(bench.main, [*args, "--seeds", "0,1"])
    assert refused.exit_code == 1 and "states: is a file, not a folder" in refused.output


@pytest.mark.parametrize("recorded, backbone, accepted", [
    ("minilm-l6@4", "auto@4", True), ("minilm-l6@4", "auto@04", True), ("minilm-l6@4", "minilm-l6@4", True),
    ("minilm-l6@4", "auto", False), ("minilm-l6@4", "minilm-l6", False),
    ("minilm-l6@3", "auto", True), ("clip-vit-b-16", "auto", True), ("clip-vit-b-16@4", "auto@4", True),
    ("minilm-l6", "auto", False),  # a 6-block row of an auto grid run before auto fell back to 3 blocks
])
def test_grid_resumes_only_at_the_backbone_depth_its_rows_record(tmp_path, recorded, backbone, accepted):
    from mamol_core.bench.grid import FIELDS, Grid, check_results

    grid = Grid(["0.5"], ["both"], ["mamol"], ["0"], backbone=backbone)
    row = {**{k: "" for k in FIELDS}, "missing_rate": "0.5", "oa": "80", "train_s": "1", "eval_s": "1", **grid.setup(),
           "backbone": recorded}  # what the grid's backbone resolved to
    with open(tmp_path / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerow(row)
    if accepted:
        check_results(tmp_path / "results.csv", grid)
    else:
        with pytest.raises(MamolError, match=f"backbone {recorded} \\(this grid: {backbone}\\)"):
            check_results(tmp_path / "results.csv", grid)


@pytest.mark.parametrize("command", [["run", "--scene", "SCENE", "--backbone", "tiny@x"], ["speed", "--backbones", "tiny,tiny@0"],
                                     ["paper", "--backbone", "nope@2"]])
def test_an_impossible_backbone_is_refused_before_any_data_is_read(command):
    result = CliRunner().invoke(bench.main, command)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "error: Invalid value for '--backbone" in result.output


def test_speed_refuses_a_raster_too_small_for_its_labelled_fields():
    result = CliRunner().invoke(bench.main, ["speed", "--side", "8", "--backbones", "tiny", "--device", "cpu", "--quiet"])
    assert result.exit_code == 2 and "Invalid value for '--side': 8 is not in the range x>=16" in result.output, result.output
