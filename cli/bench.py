"""mamol-bench: benchmark grids (resumable) and their tables."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from mamol_cli.common import (COMMAND_SETTINGS, Group, backbone_name, backbone_names, device_options, handle_errors, layout_options, log,
                              progress_option, progress_sink, quiet_option, setup_logging, split)
from mamol_core.bench.speed import SPEED_BACKBONES, SpeedSettings
from mamol_core.config import NORMALIZATIONS, ExpertSpec, LayoutSpec, TrainSpec
from mamol_core.data.labels import VALIDATION_UNITS
from mamol_core.errors import MamolError


def positive_counts(text: str | None) -> list[int]:
    """``--processes 1,2`` as numbers; one line for anything else."""
    try:
        counts = [int(part) for part in split(text or "")]
    except ValueError:
        counts = [0]
    if any(count < 1 for count in counts):
        raise MamolError(f"--processes {text}: give process counts, e.g. --processes 1,2")
    return counts


@click.group(cls=Group, context_settings=COMMAND_SETTINGS)
@click.version_option(package_name="mamol")
def main():
    """Benchmark MaMOL and its variants on scenes under the missing-modality protocol."""


@main.command()
@click.option("--scene", type=click.Path(path_type=Path), required=True, help="Scene folder with train and test labels.")
@click.option("--name", help="Scene name in the results (default: the folder's name).")
@click.option("--rates", default="0.5,0.7,0.9", show_default=True, help="Missing rates, comma-separated.")
@click.option("--conditions", default="both", show_default=True, help="Missing conditions (modality names or both), comma-separated.")
@click.option("--methods", default="mamol", show_default=True, help="Methods, comma-separated.")
@click.option("--seeds", default="0", show_default=True, help="Seeds, comma-separated.")
@click.option("--modalities", help="Use only these modalities of the scene, comma-separated.")
@click.option("--backbone", default="auto", show_default=True, callback=backbone_name)
@layout_options
@click.option("--epochs", type=click.IntRange(min=0), default=TrainSpec.epochs, show_default=True)
@click.option("--min-steps", type=click.IntRange(min=0), default=TrainSpec.min_steps, show_default=True, help="At least this many optimizer steps per cell.")
@click.option("--eval-mode", default="pixel,dense", show_default=True,
              help="pixel, dense or dense@STRIDE, comma-separated; kappa and per-pattern OA are the first's; tables lead with pixel "
                   "(a centred patch per pixel, as in the paper) and show the others beside it.")
@click.option("--validation", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Hold out about this share of the training labels (whole 32-pixel blocks) and score on it instead of the test labels.")
@click.option("--validation-unit", type=click.Choice(VALIDATION_UNITS), default="blocks", show_default=True,
              help="With --validation: hold out whole blocks, or whole fields (connected patches of one class, at least one per class).")
@click.option("--save-models", is_flag=True, help="Keep each cell's model under OUTPUT/models.")
@click.option("--modality-dropout", type=click.FloatRange(0, 1), default=TrainSpec.modality_dropout, show_default=True,
              help="Share of training samples with two or more sensors that lose one more at random.")
@click.option("--rotation", type=click.Choice(["square", "any"]), default=TrainSpec.rotation, show_default=True,
              help="Augmentation of training patches (mamol-train --rotation).")
@click.option("--normalization", type=click.Choice(NORMALIZATIONS), default=TrainSpec.normalization, show_default=True,
              help="How band values are scaled (mamol-train --normalization).")
@click.option("--expert-lr-scale", type=click.FloatRange(min=0, min_open=True), default=TrainSpec.expert_lr_scale, show_default=True,
              help="The experts, routers and prompts learn at the learning rate times this (mamol-train --expert-lr-scale).")
@click.option("--rank", type=click.IntRange(min=1), default=ExpertSpec.rank, show_default=True,
              help="LoRA rank of every LoRA expert (mamol, its ablations, moe_ada, moe_task; the other methods have none).")
@click.option("--early-stopping", type=click.FloatRange(0, 0.5, max_open=True), default=TrainSpec.validation, show_default=True,
              help="Hold out this share of the training labels in every cell to keep the weights that score best on it "
                   "(mamol-train --validation).")
@click.option("--patience", type=click.IntRange(min=0), default=TrainSpec.patience, show_default=True,
              help="With --early-stopping: stop a cell after this many checks without gain (mamol-train --patience).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder for results.csv (cells already there are skipped).")
@device_options
@progress_option
@quiet_option
@handle_errors
def run(scene, name, rates, conditions, methods, seeds, modalities, backbone, patch_size, token_size, tokenizer_hidden, encoding, epochs, min_steps,
        eval_mode, validation, validation_unit, save_models, modality_dropout, rotation, normalization, expert_lr_scale, rank, early_stopping,
        patience, output, device,
        precision, progress_mode, quiet):
    """Train and evaluate every cell of the grid; finished cells are skipped, so a stopped run resumes."""
    setup_logging(quiet)
    from mamol_core.bench.grid import Grid, run_grid

    grid = Grid(grid_values("--rates", rates, float), grid_values("--conditions", conditions), grid_values("--methods", methods),
                grid_values("--seeds", seeds, int), split(modalities or ""), backbone,
                LayoutSpec(patch_size, token_size, tokenizer_hidden, encoding), epochs, min_steps, split(eval_mode), validation, save_models,
                modality_dropout, early_stopping, patience, rotation, validation_unit, normalization, expert_lr_scale, rank)
    if validation_unit != "blocks" and not validation:
        raise MamolError(f"--validation-unit {validation_unit} needs a share to hold out: add --validation 0.25 (or drop --validation-unit)")
    if patience and not early_stopping:
        raise MamolError(f"--patience {patience} needs a split to watch: add --early-stopping 0.2 (or drop --patience)")
    run_grid(scene, name or scene.name, grid, output, device, precision, progress_sink(progress_mode))
    log.info("results in %s", output / "results.csv")


def grid_values(flag: str, text: str, same: Callable[[str], object] = str) -> list[str]:
    """The comma-separated values of one axis of the grid: at least one, each once (compared as ``same`` reads them:
    a repeated value would train its cells twice, and the table refuses a run found twice)."""
    values = split(text)
    if not values:
        raise MamolError(f"{flag} {text!r}: give at least one value (comma-separated)")
    try:
        keys = [same(value) for value in values]
    except ValueError:
        return values  # the grid names the value it cannot read
    repeated = next((value for value, key in zip(values, keys) if keys.count(key) > 1), None)
    if repeated is not None:
        raise MamolError(f"{flag} {text}: {repeated} is given more than once; give each value once")
    return values


@main.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="A model with routed experts.")
@click.option("--scene", type=click.Path(path_type=Path), required=True, help="Scene whose test pixels are routed.")
@click.option("--class-name", help="Only test pixels of this class (the paper used one class).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Picture to write (.png, .pdf, .svg or another format matplotlib writes); a JSON with the shares goes beside it.")
@device_options
@quiet_option
@handle_errors
def routing(model_path, scene, class_name, max_pixels, output, device, precision, quiet):
    """Plot per-block expert activations under each missing pattern (the paper's Fig. 5)."""
    setup_logging(quiet)
    import json

    import numpy as np
    import torch

    from mamol_core.atomic import atomic_paths, check_distinct, check_writable
    from mamol_core.bench.routing import describe_patterns, picture_formats, plot_routing, routing_shares
    from mamol_core.config import ProtocolSpec
    from mamol_core.data.patches import PatchSampler
    from mamol_core.data.pixels import PixelSet, prepare_scene
    from mamol_core.data.scene import CLASS_TABLE, open_scene
    from mamol_core.device import autocast_dtype, resolve_device
    from mamol_core.evaluation.score import order_scene_for_model
    from mamol_core.mapping.dense import inference_model
    from mamol_core.modelfile.header import read_config
    from mamol_core.modelfile.weights import load_model

    formats = picture_formats()
    if output.suffix.lower() not in formats:
        raise MamolError(f"{output}: give the picture one of the extensions {', '.join(formats)}")
    shares_path = output.with_suffix(".json")
    check_writable(output)
    check_writable(shares_path)
    config = read_config(model_path)
    compute = resolve_device(device)
    opened = order_scene_for_model(open_scene(scene, classes=config.model.classes, for_training=False), config, str(scene))
    check_distinct({"-o": output, "the shares beside it": shares_path},
                   {"--model": model_path, "the scene's class table": scene / CLASS_TABLE,
                    **{f"the scene's {m.name} raster": m.path for m in opened.modalities}})
    prepared, _ = prepare_scene(opened, ProtocolSpec(0.0, "both", 0), config.model.layout.patch_size, specs=config.model.modalities,
                                require_test=True)
    pixels = prepared.test
    names = [c.name for c in config.model.classes]
    chosen = np.ones(len(pixels), bool)
    if class_name is not None:
        if class_name not in names:
            raise MamolError(f"--class-name {class_name!r}: the model's classes are {', '.join(names)}")
        chosen = pixels.targets == names.index(class_name)
    index = np.flatnonzero(chosen)[:max_pixels]
    pixels = PixelSet(pixels.rows[index], pixels.cols[index], pixels.targets[index], pixels.presence[index])
    model, config = load_model(model_path, compute)
    sampler = PatchSampler(torch.from_numpy(prepared.data).to(compute), config.model.layout.patch_size)
    model = inference_model(model, autocast_dtype(compute, precision))  # cast once for every pattern
    shares = {name: routing_shares(model, sampler, pixels, pattern) for name, pattern in describe_patterns(config.model.modality_names)}
    if not any(shares.values()):
        raise MamolError(f"{model_path}: this model has no routed experts to plot")
    with atomic_paths([output, shares_path]) as (picture, numbers):
        plot_routing(shares, picture, f"{model_path.name}: {len(pixels)} test pixels" + (f" of class {class_name}" if class_name else ""))
        numbers.write_text(json.dumps({k: {str(l): v.tolist() for l, v in d.items()} for k, d in shares.items()}, indent=1))
    log.info("routing plot written to %s", output)


@main.command()
@click.option("--dataset", type=click.Choice(["houston2013", "trento", "augsburg"]), required=True)
@click.option("--source", type=click.Path(path_type=Path), required=True, help="Folder holding the dataset's .mat files.")
@click.option("--var", "overrides", multiple=True, metavar="WHAT=FILE:VARIABLE",
              help="Where an array is when the names differ (WHAT: a modality, train, test or ground_truth).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the training draw when only a ground-truth map exists.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Scene folder to write.")
@handle_errors
def prepare(dataset, source, overrides, seed, output):
    """Turn a benchmark dataset's .mat files into a scene folder (GeoTIFFs, label rasters, classes.json)."""
    from mamol_core.bench.paper_data import prepare_dataset
    from mamol_core.data.scene import parse_inputs

    prepare_dataset(dataset, source, output, {k: str(v) for k, v in parse_inputs(overrides, "--var", usage="WHAT=FILE:VARIABLE, e.g. --var lidar=LiDAR.mat:LiDAR").items()}, seed)
    click.echo(f"scene written to {output}")


@main.command()
@click.option("--dataset", type=click.Choice(["houston2013", "trento", "augsburg"]), required=True)
@click.option("--source", type=click.Path(path_type=Path), required=True, help="Folder holding the dataset's .mat files.")
@click.option("--table", type=click.Choice(["1", "3"]), default="1", show_default=True, help="The paper's Table 1 or Table 3 (Augsburg, three modalities).")
@click.option("--methods", help="Methods, comma-separated (default: the table's).")
@click.option("--seeds", default="0", show_default=True)
@click.option("--backbone", default="auto", show_default=True, callback=backbone_name)
@click.option("--epochs", type=click.IntRange(min=0), default=TrainSpec.epochs, show_default=True)
@click.option("--min-steps", type=click.IntRange(min=0), default=TrainSpec.min_steps, show_default=True, help="At least this many optimizer steps per cell.")
@click.option("--paper-numbers", type=click.Path(path_type=Path),
              help="Folder with paper_table1.csv / paper_table3_augsburg3.csv (default: ../shared/bench beside the checkout).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@device_options
@progress_option
@quiet_option
@handle_errors
def paper(dataset, source, table, methods, seeds, backbone, epochs, min_steps, paper_numbers, output, device, precision, progress_mode, quiet):
    """Reproduce the paper's Table 1 (or 3) on a dataset's .mat files: prepare the scene, run the grid, write table.md."""
    setup_logging(quiet)
    from mamol_core.bench.grid import check_grid_values, paper_grid, paper_table, run_grid
    from mamol_core.bench.paper_data import prepare_dataset

    grid = paper_grid(dataset, table, split(methods) if methods else None, split(seeds), backbone, epochs, min_steps)
    check_grid_values(grid)
    scene = output / "scene"
    if not (scene / "train_labels.tif").is_file():
        prepare_dataset(dataset, source, scene)
    run_grid(scene, dataset, grid, output, device, precision, progress_sink(progress_mode))
    text = paper_table(output / "results.csv", dataset, table, paper_numbers)
    (output / "table.md").write_text(text)
    click.echo(text)


@main.command()
@click.option("--results", "results", multiple=True, required=True,
              help="A results.csv of mamol-bench run, or LABEL=results.csv; repeat to tabulate several together (a labelled "
                   "file's methods become LABEL:method, e.g. d3:mamol, so the same method in two setups is compared run by run).")
@click.option("--anchor", type=click.Path(path_type=Path), help="Anchor CSV (dataset,missing_rate,condition,method,oa,kappa).")
@click.option("--anchor-dataset", help="Dataset name of the anchor rows to use (needed where the file holds several).")
@click.option("--anchor-map", help="Our condition = anchor condition, comma-separated (e.g. both=missing_both).")
@click.option("--paper", type=click.Path(path_type=Path), help="The paper's Table 1 CSV.")
@click.option("--paper-dataset", help="Dataset name in the paper table (e.g. Trento; needed where it holds several).")
@click.option("--paper-map", help="Our condition = paper condition, comma-separated.")
@click.option("--methods", help="Comma-separated methods to tabulate, in column order (default: all in the results).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the markdown table here too.")
@handle_errors
def table(results, anchor, anchor_dataset, anchor_map, paper, paper_dataset, paper_map, methods, output):
    """Print a markdown table of one or more results CSVs beside an anchor and the paper's numbers."""
    from mamol_core.atomic import atomic_path, check_distinct, check_writable
    from mamol_core.bench.tables import markdown_table, parse_spec

    for name, source, extras in (("--anchor", anchor, {"--anchor-dataset": anchor_dataset, "--anchor-map": anchor_map}),
                                 ("--paper", paper, {"--paper-dataset": paper_dataset, "--paper-map": paper_map})):
        given = [option for option, value in extras.items() if value]
        if given and source is None:
            raise MamolError(f"{given[0]} says how to read {name}'s file: add {name} FILE.csv or leave {given[0]} out")
    if output:
        check_writable(output)
        check_distinct({"-o": output}, {**{f"--results {spec}": parse_spec(spec)[1] for spec in results}, "--anchor": anchor,
                                        "--paper": paper})
    text = markdown_table(results, anchor, anchor_dataset, anchor_map, paper, paper_dataset, paper_map,
                          split(methods) if methods else None)
    if output:
        with atomic_path(output) as temporary:
            temporary.write_text(text)
    click.echo(text)


@main.command()
@click.option("--side", type=click.IntRange(min=16), help="Side of the synthetic raster in pixels (at least 16, for its labelled fields); default 256 on a CPU (about 2.5 minutes on 2 float32 "
                                     "cores), 2048 on a GPU.")
@click.option("--bands", type=click.IntRange(min=1), default=SpeedSettings.bands, show_default=True, help="Bands of the synthetic cube (a DSM is the second sensor).")
@click.option("--backbones", default=",".join(SPEED_BACKBONES), show_default=True, callback=backbone_names,
              help="Backbones to measure, comma-separated.")
@layout_options
@click.option("--train-steps", type=click.IntRange(min=1), default=SpeedSettings.train_steps, show_default=True, help="Timed training steps per backbone (after one warm-up step).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per mapping batch; default 128 on CPU, 2048 on GPU.")
@click.option("--processes", help="Also measure mamol-map and mamol-train under torchrun with these process counts, "
                                   "comma-separated (e.g. 1,2), with the first backbone.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the figures to this JSON file.")
@device_options
@quiet_option
@handle_errors
def speed(side, bands, backbones, patch_size, token_size, tokenizer_hidden, encoding, train_steps, batch_size, processes, json_path, device, precision,
          quiet):
    """Mapping and training throughput of MaMOL beside a random forest's, on one synthetic raster."""
    setup_logging(quiet)
    import json

    from mamol_core.atomic import atomic_path, check_writable
    from mamol_core.bench.speed import run_speed, speed_table
    from mamol_core.device import autocast_dtype, resolve_device

    if json_path is not None:
        check_writable(json_path)
    compute = resolve_device(device)
    settings = SpeedSettings(side or (2048 if compute.type == "cuda" else SpeedSettings.side), bands, tuple(split(backbones)),
                             LayoutSpec(patch_size, token_size, tokenizer_hidden, encoding), train_steps, map_batch=batch_size,
                             processes=tuple(positive_counts(processes)), precision=precision)
    result = run_speed(settings, compute, autocast_dtype(compute, precision))
    if json_path is not None:
        with atomic_path(json_path) as temporary:
            temporary.write_text(json.dumps(result.as_dict(), indent=1))
    click.echo(speed_table(result))


if __name__ == "__main__":
    main()
