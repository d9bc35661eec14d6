"""mamol-bench: benchmark grids (resumable) and their tables."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import device_options, handle_errors, log, progress_option, progress_sink, quiet_option, setup_logging


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Benchmark MaMOL and its variants on scenes under the missing-modality protocol."""


@main.command()
@click.option("--scene", type=click.Path(path_type=Path), required=True, help="Scene folder with train and test labels.")
@click.option("--name", help="Scene name in the results (default: the folder's name).")
@click.option("--rates", default="0.5,0.7,0.9", show_default=True, help="Missing rates, comma-separated.")
@click.option("--conditions", default="both", show_default=True, help="Missing conditions (modality names or both), comma-separated.")
@click.option("--methods", default="mamol", show_default=True, help="Methods, comma-separated.")
@click.option("--seeds", default="0", show_default=True, help="Seeds, comma-separated.")
@click.option("--backbone", default="auto", show_default=True)
@click.option("--patch-size", type=int, default=11, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--eval-mode", type=click.Choice(["pixel", "dense"]), default="pixel", show_default=True)
@click.option("--save-models", is_flag=True, help="Keep each cell's model under OUTPUT/models.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder for results.csv (cells already there are skipped).")
@device_options
@progress_option
@quiet_option
@handle_errors
def run(scene, name, rates, conditions, methods, seeds, backbone, patch_size, epochs, eval_mode, save_models, output, device,
        precision, progress_mode, quiet):
    """Train and evaluate every cell of the grid; finished cells are skipped, so a stopped run resumes."""
    setup_logging(quiet)
    progress_mode = progress_sink(progress_mode)
    from mamol_core.bench import Cell, run_grid
    from mamol_core.config import BackboneSpec, TrainSpec
    from mamol_core.device import autocast_dtype, resolve_device
    from mamol_core.scene import open_scene

    opened = open_scene(scene)
    compute = resolve_device(device)
    output.mkdir(parents=True, exist_ok=True)
    cells = [Cell(name or scene.name, float(r), c, m, int(s)) for r in split(rates) for c in split(conditions)
             for m in split(methods) for s in split(seeds)]
    run_grid(cells, opened, output / "results.csv", backbone=BackboneSpec(backbone), patch_size=patch_size,
             train=TrainSpec(epochs=epochs), device=compute, amp_dtype=autocast_dtype(compute, precision), eval_mode=eval_mode,
             progress_mode=progress_mode, model_dir=output / "models" if save_models else None)
    log.info("results in %s", output / "results.csv")


@main.command()
@click.option("--results", type=click.Path(path_type=Path), required=True)
@click.option("--anchor", type=click.Path(path_type=Path), help="Anchor CSV (dataset,missing_rate,condition,method,oa,kappa).")
@click.option("--anchor-dataset", help="Dataset name of the anchor rows to use.")
@click.option("--anchor-map", help="Our condition = anchor condition, comma-separated (e.g. both=missing_both).")
@click.option("--paper", type=click.Path(path_type=Path), help="The paper's Table 1 CSV.")
@click.option("--paper-dataset", help="Dataset name in the paper table (e.g. Trento).")
@click.option("--paper-map", help="Our condition = paper condition, comma-separated.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the markdown table here too.")
@handle_errors
def table(results, anchor, anchor_dataset, anchor_map, paper, paper_dataset, paper_map, output):
    """Print a markdown table of a results CSV beside an anchor and the paper's numbers."""
    from mamol_core.bench import markdown_table

    text = markdown_table(results, anchor, anchor_dataset, anchor_map, paper, paper_dataset, paper_map)
    if output:
        output.write_text(text)
    click.echo(text)
