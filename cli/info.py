"""mamol-info: what a model file expects (modalities, bands, classes), read without loading torch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from mamol_cli.common import COMMAND_SETTINGS, Command, handle_errors
from mamol_core.errors import MamolError


@click.command(cls=Command, context_settings=COMMAND_SETTINGS)
@click.version_option(package_name="mamol")
@click.argument("model_path", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole embedded config as JSON.")
@click.option("--check", is_flag=True, help="Instead, check that this environment runs mamol: import torch, rasterio, "
                                           "geopandas and open_clip, and say which versions and device it has.")
@handle_errors
def main(model_path, as_json, check):
    """Describe MODEL_PATH: modalities with band counts, classes, backbone and protocol."""
    if check and (model_path is not None or as_json):
        raise MamolError(f"--check describes this environment, not a model: leave out {'--json' if as_json else model_path} or --check")
    if check:
        click.echo(environment_report())
        return
    if model_path is None:
        raise MamolError("give a model file (mamol-info MODEL.safetensors) or --check")
    from mamol_core.modelfile.header import expert_blocks, read_config

    config = read_config(model_path)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(config), indent=1))
        return
    model = config.model
    click.echo(f"mamol model {model.name or model_path.stem!r}: {model_path} (mamol {config.mamol_version}, format {config.format_version})")
    click.echo("modalities: " + ", ".join(f"{m.name} ({m.bands} band{'' if m.bands == 1 else 's'}{names_text(m.band_names)}"
                                          f"{', quantile normalisation' if m.normalization == 'quantile' else ''}"
                                          f"{'' if m.as_declared else ', every band as stored: no scale, offset or alpha'}"
                                          f"{unit_text(m.unit)}"
                                          f"{f', pixels of {m.ground_pixel:.3g} m' if m.ground_pixel else ''})"
                                          for m in model.modalities))
    click.echo("classes: " + ", ".join(f"{c.value}={c.name}" for c in model.classes))
    click.echo(f"backbone: {model.backbone.name}; experts: {model.experts.method}, "
               f"{blocks_text(expert_blocks(model_path))}, rank {model.experts.rank}; tiles of {model.layout.patch_size} px, "
               f"tokens of {model.layout.token_size} px, tokenizer width {model.layout.hidden}, {model.layout.encoding} encoding")
    click.echo(f"trained with missing rate {config.protocol.missing_rate:g}, missing {config.protocol.missing}"
               + (f", on the labels of {config.training_labels.name}" if config.training_labels is not None else ""))
    record = config.validation
    if record is not None:
        share = f"{record.share:.0%} of the labels, --validation {config.train.validation:g}" if record.share is not None \
            else f"{config.train.validation:g} of the labels"
        click.echo(f"validation: {record.pixels} held-out training pixels ({share}, blocks of {config.train.validation_block} px, "
                   f"seed {config.train.seed}){record.sample_text()}; best OA {record.best_oa:.2f} % at step {record.best_step} of "
                   f"{record.steps_run}{' (stopped early)' if record.stopped_early else ''}")
    if model.grid is not None:
        click.echo(f"training grid: {grid_text(model.grid)} (mamol-map maps at this pixel size, in the CRS and alignment of the "
                   "finest input given, unless --reference is given: maps from other sensors align only with the same --reference)")
    else:
        click.echo("training grid: not recorded (an older model file); mamol-map uses the finest input's grid")
    accuracy = report_accuracy(model_path)
    if accuracy:
        click.echo(accuracy)


def report_accuracy(model_path: Path) -> str | None:
    """One line of the accuracy per sensor combination in the model's training report (``<model>.report/``,
    or ``<model>_report/``), ``None`` without one; a report that records another model file's header (an
    earlier model written to the same path) is not this model's, and the line says so."""
    from mamol_core.evaluation.metrics import measure_text
    from mamol_core.evaluation.reports_found import model_report, report_folders

    report, folder, earlier = model_report(model_path, report_folders(model_path))
    if report is not None:
        try:
            results, overall = report["results"], report["results"]["overall"]
            patterns = "; ".join(f"{name} {measure_text(summary['oa'])}{pixels_text(summary.get('samples'))}"
                                 for name, summary in results.items() if name != "overall")
            return (f"accuracy in its report ({folder}, {overall['samples']} test pixels, {report['context'].get('mode', 'pixel')}): "
                    f"OA {measure_text(overall['oa'])}, kappa {measure_text(overall['kappa'])}"
                    + (f"; by missing pattern: {patterns}" if patterns else ""))
        except (KeyError, TypeError, AttributeError):  # not a report mamol wrote: nothing to say from it
            return None
    if earlier:
        return (f"accuracy: {earlier[0]} is the report of an earlier model written to {model_path}, not this one's; "
                f"mamol-eval --model {model_path} -o {earlier[0]} with the test data writes this one's")
    return None


def pixels_text(samples: int | None) -> str:
    """A combination's test pixels for its accuracy: `` (11 px, too few to judge)``; "" where unrecorded."""
    from mamol_core.evaluation.reports_found import FEW_PIXELS

    if samples is None:
        return ""
    return f" ({samples} px{', too few to judge' if samples < FEW_PIXELS else ''})"


def unit_text(unit) -> str:
    """A modality's value unit (``ModalitySpec.unit``) for its line where its training raster declared one
    (``, values in ft``); "" where it did not (a unit presumed from a CRS says nothing of imagery)."""
    return f", values in {unit.name}" if unit is not None and unit.declared else ""


def names_text(names: list[str]) -> str:
    """A modality's band names as its training raster described them, first and last (``: '400 nm' … '975 nm'``);
    "" where none were recorded."""
    if not names:
        return ""
    return f": {names[0]!r}" if len(names) == 1 else f": {names[0]!r} … {names[-1]!r}"


def grid_text(grid) -> str:
    """The training grid (``GridSpec``) in a few words: its CRS and pixel size with the CRS's unit."""
    from mamol_core.mapping.crs import crs_name, crs_unit, parse_crs

    crs = parse_crs(grid.crs, "the model's training grid") if grid.crs else None
    unit = crs_unit(crs) if crs is not None else None
    return f"{crs_name(crs)}, pixel {grid.pixel_size[0]:g} x {grid.pixel_size[1]:g}{f' {unit}' if unit else ''}"


def blocks_text(blocks: list[int]) -> str:
    """'in blocks 2-5' (counted from 0), 'in block 0', 'in blocks 0, 2' or 'in no block': where the experts are."""
    if not blocks:
        return "in no block"
    if len(blocks) > 1 and blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"in blocks {blocks[0]}-{blocks[-1]}"
    return f"in block{'s' if len(blocks) > 1 else ''} {', '.join(map(str, blocks))}"


def environment_report() -> str:
    """One line: mamol's version and those of the libraries it maps with, and the device torch sees."""
    from importlib.metadata import version

    try:
        import geopandas
        import open_clip  # noqa: F401
        import rasterio
        import torch
    except Exception as exc:  # a missing package or a broken binary: say which
        raise MamolError(f"this environment cannot run mamol ({type(exc).__name__}: {exc}); reinstall it (pip install mamol)") from None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"mamol {version('mamol')} works: torch {torch.__version__} ({device}), rasterio {rasterio.__version__} "
            f"(GDAL {rasterio.__gdal_version__}), geopandas {geopandas.__version__}, open_clip {version('open_clip_torch')}")


if __name__ == "__main__":
    main()
