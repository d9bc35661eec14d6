"""mamol-eval: accuracy of a saved model on a scene's test labels, overall and per missing pattern."""

from __future__ import annotations

from pathlib import Path

import click

from mamol_cli.common import (COMMAND_SETTINGS, Command, device_options, handle_errors, log, progress_option, progress_sink,
                              quiet_option, setup_logging, warnings_kept)
from mamol_core.config import ProtocolSpec


@click.command(cls=Command, context_settings=COMMAND_SETTINGS)
@click.version_option(package_name="mamol")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="Model file written by mamol-train.")
@click.option("--scene", type=click.Path(path_type=Path), help="Scene folder (modality rasters and test_labels.tif).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=PATH", help="Add or replace a modality raster (repeatable).")
@click.option("--labels", type=click.Path(path_type=Path), help="Test labels (raster or vector); default: the scene's test_labels.tif.")
@click.option("--label-field", help="Class field of vector labels.")
@click.option("--missing-rate", type=click.FloatRange(0, 1), help="Override the model's test missing rate.")
@click.option("--missing", help="Override the model's missing condition (both, subsets or a modality name).")
@click.option("--mode", type=click.Choice(["pixel", "dense"]), default="pixel", show_default=True,
              help="pixel: a patch centred on each test pixel; dense: blended tiles as mamol-map predicts.")
@click.option("--stride", type=click.IntRange(min=1), help="Tile step of --mode dense; default: half the tile.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Raster whose grid the inputs are read on; default: their own when they share one at the model's pixel "
                   "size, else the finest input's CRS and alignment at the model's training pixel size (as mamol-map).")
@click.option("--assume-crs", help="CRS for inputs that have none, e.g. EPSG:32632 (only needed when grids differ).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Report folder; default: <MODEL>.eval next to the model.")
@device_options
@progress_option
@quiet_option
@handle_errors
def main(model_path, scene, inputs, labels, label_field, missing_rate, missing, mode, stride, reference, assume_crs, output, device,
         precision, progress_mode, quiet):
    """Evaluate MODEL on test labels under the model's missing-modality protocol (or an override); with
    some of the model's modalities not given, from those given (each present where it has data)."""
    setup_logging(quiet)
    progress_mode = progress_sink(progress_mode)
    from mamol_core.atomic import check_folder
    from mamol_core.data.labels import labels_record
    from mamol_core.data.scene import open_scene, parse_inputs
    from mamol_core.errors import MamolError
    from mamol_core.device import autocast_dtype, resolve_device
    from mamol_core.evaluation.html import pattern_title
    from mamol_core.evaluation.metrics import summary_line
    from mamol_core.evaluation.report import write_report
    from mamol_core.evaluation.reports_found import check_report_folder, is_training_report
    from mamol_core.evaluation.score import evaluate_model_on_scene, order_scene_for_model
    from mamol_core.modelfile.header import DIGEST_KEY, header_digest, read_config
    from mamol_core.modelfile.weights import load_model

    if stride is not None and mode != "dense":
        raise MamolError(f"--stride {stride}: only --mode dense steps tiles; add --mode dense or leave --stride out")
    folder = output or model_path.with_suffix(".eval")
    check_folder(folder)
    check_report_folder(folder, "-o")
    config = read_config(model_path)
    if is_training_report(folder, model_path):
        default = "" if output is None else f", or leave -o out to write {model_path.with_suffix('.eval')}"
        raise MamolError(f"-o {folder}: holds this model's training report, its accuracy as mamol-info and QGIS show it; choose "
                         f"another folder{default}")
    compute = resolve_device(device)
    with warnings_kept() as said:  # recorded in the report: what was said about the inputs it scores
        scored = labels or (scene / "test_labels.tif" if scene is not None else None)
        if config.training_labels is not None and scored is not None and scored.is_file() and \
                labels_record(scored, label_field).same_labels(config.training_labels):
            log.warning("%s: the model was trained on this file's labels (its training labels, %s), so its accuracy on them is that "
                        "of pixels it learned, not of a map elsewhere: score it on labels it did not train on", scored,
                        config.training_labels.name)
        opened = open_scene(scene, parse_inputs(inputs), labels=labels, label_field=label_field, classes=config.model.classes,
                            for_training=False, reference=reference, assume_crs=assume_crs, model_grid=config.model.grid)
        opened = order_scene_for_model(opened, config, "the inputs", complete=False)
        absent = [name for name in config.model.modality_names if name not in opened.names]
        protocol = ProtocolSpec(config.protocol.missing_rate if missing_rate is None else missing_rate,
                                config.protocol.missing if missing is None else missing, config.protocol.seed)
        if absent:
            if missing_rate is None and missing is None:
                protocol = ProtocolSpec(0.0, protocol.missing, protocol.seed)
            log.warning("%s not given: absent on every test pixel, so the accuracy is that of a map from %s (scored per combination "
                        "of the sensors given, where they hold data)%s", " and ".join(absent),
                        " and ".join(opened.names), " (missing rate 0; --missing-rate and --missing set another protocol)"
                        if missing_rate is None and missing is None else "")
        model, config = load_model(model_path, compute)
        evaluation = evaluate_model_on_scene(model, config, opened, protocol, compute, autocast_dtype(compute, precision),
                                             progress_mode=progress_mode, mode=mode, stride=stride)
    write_report(folder, evaluation, {"model": str(model_path), DIGEST_KEY: header_digest(model_path), "protocol": vars(protocol),
                                      "modalities_given": opened.names, "device": str(compute), "mode": mode, "warnings": said})
    for name, summary in evaluation.summaries.items():
        log.info(summary_line(pattern_title(name, evaluation.modality_names), summary))
    log.info("report written to %s", folder)


if __name__ == "__main__":
    main()
