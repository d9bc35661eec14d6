"""mamol-train: train a MaMOL model on a scene and report its accuracy."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

import click

from mamol_cli.common import (COMMAND_SETTINGS, Command, backbone_name, device_options, handle_errors, layout_options, log, progress_option,
                              progress_sink, quiet_option, seconds_text, setup_logging, warnings_kept)
from mamol_core.atomic import check_distinct, check_folder, check_writable
from mamol_core.config import NORMALIZATIONS, BackboneSpec, ExpertSpec, LayoutSpec, ProtocolSpec, TrainSpec
from mamol_core.errors import MamolError

#: Test pixels the report after training scores at most (a seeded sample beyond that).
EVAL_PIXELS = 50_000


@click.command(cls=Command, context_settings=COMMAND_SETTINGS)
@click.version_option(package_name="mamol")
@click.option("--scene", type=click.Path(path_type=Path), help="Scene folder: <modality>.tif files, train_labels.tif, test_labels.tif, classes.json.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=PATH", help="Add or replace a modality raster (repeatable).")
@click.option("--labels", type=click.Path(path_type=Path), help="Training labels: a label raster or vector points/polygons.")
@click.option("--label-field", help="Class field of vector labels (class codes or names).")
@click.option("--test-labels", type=click.Path(path_type=Path), help="Test labels (raster or vector); default: the scene's test_labels.tif when --labels is not given, "
                   "else (or without that file) --holdout of the labelled groups, held out whole.")
@click.option("--classes", type=click.Path(path_type=Path), help="Class table JSON; default: the scene's classes.json.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Raster whose grid (CRS, pixel size, alignment) training reads every input on; default: the inputs' own "
                   "grid when they share one, else the finest input's.")
@click.option("--assume-crs", help="CRS for inputs that have none, e.g. EPSG:32632 (needed when grids differ, or to place vector labels).")
@click.option("--holdout", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True, help="Share of labelled groups held out for testing when no test labels exist (none with --no-eval).")
@click.option("--missing-rate", type=click.FloatRange(0, 1), default=ProtocolSpec.missing_rate, show_default=True, help="Missing rate eta: share of samples missing a modality.")
@click.option("--missing", default=ProtocolSpec.missing, show_default=True, help="both, subsets, or the name(s) of the missing modality.")
@click.option("--backbone", default="auto", show_default=True, callback=backbone_name,
              help="clip-vit-b-16, minilm-l6, vit-b-16-random, scratch-small, tiny, openclip:MODEL[:TAG] or auto; "
                   "NAME@N keeps only its first N blocks (minilm-l6@4).")
@click.option("--backbone-weights", type=click.Path(path_type=Path), help="Local weights file (or MiniLM folder) for the backbone.")
@click.option("--expert-layers", type=click.IntRange(min=0), default=ExpertSpec.num_layers, show_default=True, help="How many blocks get expert layers.")
@click.option("--placement", type=click.Choice(["last", "first"]), default=ExpertSpec.placement, show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=ExpertSpec.rank, show_default=True, help="LoRA rank of every expert.")
@click.option("--dynamic-experts", type=click.IntRange(min=0), default=ExpertSpec.num_dynamic, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=ExpertSpec.top_k, show_default=True)
@layout_options
@click.option("--epochs", type=click.IntRange(min=0), default=TrainSpec.epochs, show_default=True)
@click.option("--min-steps", type=click.IntRange(min=0), default=TrainSpec.min_steps, show_default=True,
              help="At least this many optimizer steps, whatever the epochs (small label sets need more passes).")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainSpec.batch_size, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TrainSpec.lr, show_default=True)
@click.option("--expert-lr-scale", type=click.FloatRange(min=0, min_open=True), default=TrainSpec.expert_lr_scale, show_default=True,
              help="The experts, routers and prompts added to the frozen backbone learn at --lr times this.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=TrainSpec.weight_decay, show_default=True)
@click.option("--seed", type=int, default=TrainSpec.seed, show_default=True)
@click.option("--modality-dropout", type=click.FloatRange(0, 1), default=TrainSpec.modality_dropout, show_default=True,
              help="Share of training samples with two or more sensors that lose one more at random (on top of the protocol).")
@click.option("--rotation", type=click.Choice(["square", "any"]), default=TrainSpec.rotation, show_default=True,
              help="Augmentation: turn training patches by the square's symmetries (90-degree turns and flips) or by any angle "
                   "(for oriented textures such as crop rows that lie in other directions elsewhere).")
@click.option("--normalization", type=click.Choice(NORMALIZATIONS), default=TrainSpec.normalization, show_default=True,
              help="How band values are scaled, fitted on the training pixels: standard, (x - mean) / std; quantile, each band's "
                   "quantiles mapped to normal scores (for heavy-tailed bands: LiDAR intensity, SAR backscatter).")
@click.option("--validation", type=click.FloatRange(0, 0.5, max_open=True), default=TrainSpec.validation, show_default=True,
              help="About this share of the training labels held out, in whole blocks (--validation-block; more where classes "
                   "cluster, as the log says), to keep the weights that score best on them (and stop early with --patience); "
                   "recorded in the model file.")
@click.option("--validation-block", type=click.IntRange(min=1), default=TrainSpec.validation_block, show_default=True,
              help="Side in pixels of the square blocks --validation holds out whole (larger where neighbouring pixels are alike).")
@click.option("--patience", type=click.IntRange(min=0), default=TrainSpec.patience, show_default=True,
              help=f"With --validation: stop after this many validation checks ({TrainSpec.validation_checks} per run) without improvement; "
                   "0 runs the whole schedule.")
@click.option("--report", type=click.Path(path_type=Path), help="Report folder; default: <MODEL>.report next to the model.")
@click.option("--state", "state_path", type=click.Path(path_type=Path),
              help="Training state file, written every --save-every steps and on Ctrl-C/SIGTERM, removed once the model is "
                   "written; default: <MODEL>.state.safetensors next to the model.")
@click.option("--save-every", type=click.IntRange(min=1), default=100, show_default=True, help="Steps between training state saves.")
@click.option("--resume", type=click.Path(path_type=Path),
              help="Continue the interrupted run that wrote this state file (give the same other arguments).")
@click.option("--continue", "continue_run", is_flag=True,
              help="Continue the interrupted run whose state is at --state if it had these settings and inputs; else start "
                   "afresh and replace that state (what the QGIS dialog does).")
@click.option("--eval-pixels", type=click.IntRange(min=1), default=EVAL_PIXELS, show_default=True,
              help="Score the report on at most this many test pixels (a seeded random sample, its size stated).")
@click.option("--no-eval", is_flag=True, help="Save the model without scoring it on test pixels (no report; with no test labels, every label trains).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Model file to write (.safetensors).")
@click.option("--name", help="What the model is called (QGIS names its mapping algorithm after it); default: the model file's name.")
@device_options
@progress_option
@quiet_option
@handle_errors
def main(scene, inputs, labels, label_field, test_labels, classes, reference, assume_crs, holdout, missing_rate, missing, backbone, backbone_weights,
         expert_layers, placement, rank, dynamic_experts, top_k, patch_size, token_size, tokenizer_hidden, encoding, epochs, min_steps, batch_size, lr, expert_lr_scale, weight_decay, seed,
         modality_dropout, rotation, normalization, validation, validation_block, patience,
         report, state_path, save_every, resume, continue_run, eval_pixels, no_eval, output, name, device, precision, progress_mode, quiet):
    """Train MaMOL on labelled pixels under the missing-modality protocol, save the model, report accuracy."""
    setup_logging(quiet)
    progress_mode = progress_sink(progress_mode)
    if resume is not None and continue_run:
        raise MamolError("--resume and --continue both say which state to continue from: give one of them")
    if dynamic_experts and top_k > dynamic_experts:
        raise MamolError(f"--top-k {top_k}: a token can use at most the {dynamic_experts} --dynamic-experts; lower --top-k")
    if patience and not validation:
        raise MamolError(f"--patience {patience} needs a validation split to watch: add --validation 0.2 (or drop --patience)")
    if no_eval and click.get_current_context().get_parameter_source("holdout") is not click.core.ParameterSource.DEFAULT:
        raise MamolError(f"--holdout {holdout:g} keeps labels out of training for the accuracy report that --no-eval skips: "
                         "drop one of them")
    if no_eval:
        holdout = 0.0  # nothing would score held-out labels: train on all of them
    from mamol_core.backbones import check_backbone_weights
    check_backbone_weights(backbone, backbone_weights)
    from mamol_core.data.protocol import untrained_note
    from mamol_core.data.labels import labels_record
    from mamol_core.data.scene import open_scene, parse_inputs
    from mamol_core.device import autocast_dtype, resolve_device
    from mamol_core.distributed import process_group, stop_together
    from mamol_core.evaluation.html import pattern_title
    from mamol_core.evaluation.metrics import summary_line
    from mamol_core.evaluation.reports_found import check_report_folder
    from mamol_core.evaluation.report import write_report
    from mamol_core.evaluation.score import evaluate_run
    from mamol_core.modelfile.header import DIGEST_KEY, header_digest
    from mamol_core.modelfile.weights import save_model
    from mamol_core.training.fit import StateFiles, train_on_scene
    from mamol_core.training.state import check_state_file, is_training_state

    if resume is not None:
        check_state_file(resume)
    folder = report or output.with_suffix(".report")
    state_path = state_path or output.with_name(f"{output.stem}.state.safetensors")
    with process_group(resolve_device(device)) as (ranks, compute), warnings_kept() as said:  # said: kept in the report
        if not ranks.main:  # under torchrun rank 0 writes files and reports; the others only print their own errors
            logging.getLogger().setLevel(logging.ERROR)
        with stop_together(compute):  # a bad argument or an input one rank cannot read stops every rank, with one message
            check_writable(output)
            check_writable(state_path)
            if state_path.exists() and not is_training_state(state_path):
                raise MamolError(f"{state_path}: exists and is not a mamol training state, so it is not replaced; "
                                 "pass another --state or move that file")
            if resume is None and not continue_run and state_path.exists():
                raise MamolError(f"{state_path}: an interrupted run left its training state here; continue it with --resume "
                                 f"{state_path} or --continue (and the same other arguments), or delete the file to start afresh")
            if not no_eval:
                check_folder(folder)
                check_report_folder(folder, "--report")
            amp = autocast_dtype(compute, precision)
            if not output.exists():  # a new file cannot be an input: refuse a wrong name before reading the scene
                check_model_name(output)
            opened = open_scene(scene, parse_inputs(inputs), labels, label_field, test_labels, classes, holdout, seed,
                                reference=reference, assume_crs=assume_crs)
            record = labels_record(labels or scene / "train_labels.tif", label_field)  # the file open_scene has just read
            check_distinct({"-o": output, "--report": None if no_eval else folder, "--state": state_path},
                           {"--labels": labels, "--test-labels": test_labels, "--classes": classes, "--backbone-weights": backbone_weights,
                            "--reference": reference, "--resume": None if resume and os.path.realpath(resume) == os.path.realpath(state_path) else resume,
                            **{f"the {m.name} raster": m.path for m in opened.modalities}})
            check_model_name(output)
        protocol = ProtocolSpec(missing_rate, missing, seed)
        note = untrained_note(opened.names, missing_rate, missing)  # not in benchmarks: their protocols are the paper's on purpose
        if note is not None:
            log.warning(note)
        experts = ExpertSpec(placement=placement, num_layers=expert_layers, num_dynamic=dynamic_experts, top_k=top_k).with_rank(rank)
        spec = TrainSpec(epochs=epochs, min_steps=min_steps, batch_size=batch_size, lr=lr, expert_lr_scale=expert_lr_scale,
                         weight_decay=weight_decay, seed=seed,
                         modality_dropout=modality_dropout, rotation=rotation, normalization=normalization, validation=validation,
                         validation_block=validation_block, patience=patience)
        if ranks.distributed:
            log.info("torchrun: %d processes, each takes 1/%d of every batch of %d", ranks.world, ranks.world, batch_size)
        run = train_on_scene(opened, BackboneSpec(backbone, str(backbone_weights) if backbone_weights else None), experts,
                             LayoutSpec(patch_size, token_size, tokenizer_hidden, encoding), protocol, spec, compute, amp,
                             progress_mode if ranks.main else "none", StateFiles(state_path, save_every, resume, continue_run),
                             name or output.stem)
    if not ranks.main:
        return
    run.config.training_labels = record
    try:
        save_model(run.model, run.config, output)
    except MamolError as exc:
        if not state_path.exists():
            raise
        raise MamolError(f"{exc}; the trained state is kept in {state_path}: then run the same command with --resume "
                         f"{state_path} (or --continue) to write the model without training again") from None
    state_path.unlink(missing_ok=True)
    log.info("model written to %s (training took %s s, final loss %.4f)", output, seconds_text(run.seconds), run.history[-1])
    if no_eval or run.prepared.test is None:
        log.info("--no-eval: no accuracy report" if no_eval else "no test pixels: no accuracy report")
        return
    total = len(run.prepared.test)
    if total > eval_pixels:
        log.info("scoring a seeded random %d of the %d test pixels (--eval-pixels)", eval_pixels, total)
    try:
        evaluation = evaluate_run(run, amp, progress_mode=progress_mode, max_pixels=eval_pixels)
    except KeyboardInterrupt:
        log.warning("stopped while scoring: %s is complete but has no accuracy report; %s", output,
                    evaluation_hint(output, folder, {m.name: m.path for m in opened.modalities}, scene, labels, test_labels,
                                    label_field, assume_crs))
        raise
    context = {"model": str(output), DIGEST_KEY: header_digest(output), "protocol": vars(run.config.protocol), "device": str(compute),
               "train_seconds": round(run.seconds, 1), "test_pixels": total, "test_pixels_scored": min(total, eval_pixels),
               "warnings": said}
    if run.config.validation is not None:
        context["validation"] = {k: v for k, v in vars(run.config.validation).items() if k != "checks"}  # all checks: mamol-info --json
    write_report(folder, evaluation, context)
    for name, summary in evaluation.summaries.items():
        log.info(summary_line(pattern_title(name, evaluation.modality_names), summary))
    log.info("report written to %s", folder)


def evaluation_hint(output: Path, folder: Path, rasters: dict[str, Path], scene: Path | None, labels: Path | None,
                    test_labels: Path | None, label_field: str | None, assume_crs: str | None) -> str:
    """How to write the report of a model whose scoring after training was stopped: the ``mamol-eval``
    command on the same sensor ``rasters`` (each named, so that no other raster of a scene folder is
    taken for one) and test labels, or, where the test pixels were held out of the training labels
    (drawn by training only), that training again gives it."""
    from mamol_core.data.labels import is_label_raster
    from mamol_core.data.scene import TEST_LABELS

    test_file = test_labels or (scene / f"{TEST_LABELS}.tif" if scene is not None and labels is None else None)
    if test_file is None or not test_file.exists():
        return "the labels held out for testing are drawn only by training, so train again to get one"
    words = ["mamol-eval", "--model", str(output), *[w for name, path in rasters.items() for w in ("--input", f"{name}={path}")],
             "--labels", str(test_file),
             *(["--label-field", label_field] if label_field and not is_label_raster(test_file) else []),
             *(["--assume-crs", assume_crs] if assume_crs else []), "-o", str(folder)]
    return f"{shlex.join(words)} writes it"


def check_model_name(output: Path) -> None:
    """Refuse a model file name without the .safetensors suffix."""
    if output.suffix.lower() != ".safetensors":
        raise MamolError(f"-o {output}: a model is a safetensors file; give it a .safetensors name (mamol-map, "
                         "mamol-info and the QGIS plugin look for that)")


if __name__ == "__main__":
    main()
