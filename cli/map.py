"""mamol-map: a land-cover GeoTIFF from whichever modality rasters are at hand. Under ``torchrun``
the blocks are shared among the processes (docs/distributed.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from mamol_cli.common import (COMMAND_SETTINGS, RESULT, Command, device_options, handle_errors, log, progress_option, progress_sink,
                              quiet_option, seconds_text, setup_logging)
from mamol_core.errors import MamolError

ALIASES = ("hsi", "lidar", "sar")


def optional_output(name: str, what: str):
    return click.option(f"--{name}", type=click.Path(path_type=Path), is_flag=False, flag_value=Path("-"), default=None,
                        help=f"Also write {what}; alone, next to the output as <OUTPUT>_{name}.tif.")


def sibling(output: Path, value: Path | None, name: str) -> Path | None:
    if value is None:
        return None
    return output.with_name(f"{output.stem}_{name}.tif") if str(value) == "-" else value


@click.command(cls=Command, context_settings=COMMAND_SETTINGS)
@click.version_option(package_name="mamol")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True, help="Model file written by mamol-train.")
@click.option("--hsi", type=click.Path(path_type=Path), help="Raster of the model's modality 'hsi'.")
@click.option("--lidar", type=click.Path(path_type=Path), help="Raster of the model's modality 'lidar'.")
@click.option("--sar", type=click.Path(path_type=Path), help="Raster of the model's modality 'sar'.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=PATH", help="Raster of any modality the model knows (repeatable).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Class GeoTIFF to write.")
@optional_output("probabilities", "per-class probabilities (uint8 percent, one band per class)")
@optional_output("confidence", "the winning class's probability (uint8 percent)")
@optional_output("availability", "which modalities were used per pixel (bit mask)")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Any raster whose grid (CRS, pixel size, alignment) the map uses; default: the finest input's CRS and "
                   "alignment at the model's training pixel size.")
@click.option("--assume-crs", help="CRS for inputs that have none, e.g. EPSG:32632.")
@click.option("--resampling", type=click.Choice(["bilinear", "nearest", "cubic", "average"]), default="bilinear", show_default=True)
@click.option("--stride", type=click.IntRange(min=1), help="Tile step in pixels; default: half the tile (overlapping tiles are blended). A step of the whole tile side (tiles side by side) costs a quarter and is less accurate.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Tiles per forward pass; default 128 on CPU, 2048 on GPU.")
@click.option("--block-size", type=click.IntRange(min=1), help="Block side in pixels read at once; default: from a 128 MiB budget.")
@click.option("--min-valid", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True, help="Share of a tile's pixels a modality needs to count as present there.")
@click.option("--cog", is_flag=True, help="Write Cloud-Optimized GeoTIFFs with overviews (GDAL's COG driver).")
@click.option("--aoi", type=click.Path(path_type=Path), help="Map only inside the polygons of this vector file (any CRS).")
@click.option("--mask", type=click.Path(path_type=Path), help="Map only where this raster is nonzero (any grid and CRS).")
@click.option("--sieve", type=click.IntRange(min=0), default=0, show_default=True,
              help="Give class patches smaller than this many pixels the class around them (0: off); the class map is "
                   "held in memory for it.")
@click.option("--polygons", type=click.Path(path_type=Path),
              help="Also write the class map as polygons with their area in m² (.gpkg or .geojson; held in memory while written).")
@click.option("--polygons-layer", metavar="NAME",
              help="The polygons' layer name; default: the --polygons file's name.")
@click.option("--report", type=click.Path(path_type=Path), metavar="FOLDER",
              help="A report of this model (mamol-train's or mamol-eval's) whose accuracy per sensor combination warns of a map "
                   "from sensors it is weak on; default: the report beside the model (<MODEL>.report or <MODEL>_report).")
@click.option("--estimate", is_flag=True, help="Only estimate the run time (from the block nearest the map's centre) and write nothing.")
@device_options
@progress_option
@quiet_option
@handle_errors
def main(model_path, hsi, lidar, sar, inputs, output, probabilities, confidence, availability, reference, assume_crs, resampling,
         stride, batch_size, block_size, min_valid, cog, aoi, mask, sieve, polygons, polygons_layer, report, estimate, device, precision,
         progress_mode, quiet):
    """Map land cover with MODEL from any subset of its modalities; absent ones count as missing."""
    setup_logging(quiet)
    progress_mode = progress_sink(progress_mode)
    from mamol_core.atomic import check_distinct, check_writable
    from mamol_core.data.scene import parse_inputs
    from mamol_core.data.sources import check_sources
    from mamol_core.device import autocast_dtype, resolve_device
    from mamol_core.distributed import process_group, stop_together
    from mamol_core.evaluation.reports_found import combination_warning, coverage_warnings
    from mamol_core.mapping.align import MapInput
    from mamol_core.mapping.mapper import MapOptions, map_rasters
    from mamol_core.mapping.outputs import (AVAILABILITY_BITS, POLYGON_DRIVERS, RESERVED_TABLE_PREFIXES, OutputPaths,
                                            polygon_target_problem)
    from mamol_core.modelfile.header import read_config
    from mamol_core.modelfile.weights import load_model

    with process_group(resolve_device(device)) as (ranks, compute):
        if not ranks.main:  # under torchrun rank 0 reports; the others only print their own errors
            logging.getLogger().setLevel(logging.ERROR)
        with stop_together(compute):  # a bad argument stops every rank, with one message
            if estimate and ranks.distributed:
                raise MamolError("--estimate: run it in one process, without torchrun (it estimates one process's time)")
            if not output.name:
                raise MamolError(f"-o {str(output)!r}: give the map a file name, e.g. -o landcover.tif")
            config = read_config(model_path)
            aliases = {name: (path, f"--{name}") for name, path in zip(ALIASES, (hsi, lidar, sar)) if path is not None}
            given = parse_inputs(inputs, given=aliases)
            flags = {name: aliases[name][1] if name in aliases else f"--input {name}" for name in given}
            check_sources(config.model, given, complete=False)
            results = report_results(model_path, report)
            warning = combination_warning(config.model.name or model_path.stem, list(given), config.model.modality_names, results)
            if warning:
                log.warning(warning)
            items = [MapInput(name, path) for name, path in given.items()]
            outputs = OutputPaths(output, sibling(output, probabilities, "probabilities"), sibling(output, confidence, "confidence"),
                                  sibling(output, availability, "availability"), cog, polygons, sieve, polygons_layer)
            if polygons_layer is not None and (polygons is None or not polygons_layer.strip()):
                raise MamolError(f"--polygons-layer {polygons_layer!r}: give a layer name, with --polygons FILE to write it to")
            if polygons is not None and polygons.suffix.lower() not in POLYGON_DRIVERS:
                raise MamolError(f"--polygons {polygons}: write polygons to a GeoPackage (.gpkg) or GeoJSON (.geojson) file")
            if polygons is not None and polygons.suffix.lower() == ".gpkg" and \
                    outputs.polygon_layer.lower().startswith(RESERVED_TABLE_PREFIXES):
                raise MamolError(f"--polygons {polygons}: a GeoPackage layer may not be named {outputs.polygon_layer!r} (names "
                                 f"starting with {', '.join(RESERVED_TABLE_PREFIXES)} are reserved); give it another with --polygons-layer")
            if polygons is not None and (problem := polygon_target_problem(polygons, outputs.polygon_layer)):
                raise MamolError(f"--polygons {polygons}: {problem}; give the polygons a new file")
            check_distinct(outputs.labelled(), {"--model": model_path, "--reference": reference, "--aoi": aoi, "--mask": mask,
                                                **{flags[item.name]: item.path for item in items}})
            for flag, path in {"-o": output, "--probabilities": outputs.probabilities, "--confidence": outputs.confidence,
                               "--availability": outputs.availability}.items():
                if path is not None and path.suffix.lower() not in (".tif", ".tiff"):
                    raise MamolError(f"{flag} {path}: mamol-map writes GeoTIFF rasters; give the file a .tif name")
            if outputs.availability is not None and len(config.model.modalities) > AVAILABILITY_BITS:
                raise MamolError(f"--availability: the model has {len(config.model.modalities)} sensors, and the availability raster "
                                 f"holds one bit for each of up to {AVAILABILITY_BITS}; leave --availability out")
            for path in outputs.all():
                check_writable(path)
            model, config = load_model(model_path, compute)
        options = MapOptions(stride, batch_size, block_size, min_valid, assume_crs, reference, resampling, aoi, mask)
        summary = map_rasters(model, config, items, outputs, options, compute, autocast_dtype(compute, precision),
                              progress_mode if ranks.main else "none", model_path, estimate)
    kept = f"; {summary.kept_pixels / (summary.width * summary.height):.0%} of the map kept from an earlier run" \
        if summary.kept_pixels else ""
    mapped = summary.kept_pixels < summary.width * summary.height  # else every block was finished by an earlier run
    if summary.estimated:
        log.warning("estimate: %dx%d px, %d tiles%s; about %s on %s%s; nothing was written", summary.width,
                    summary.height, summary.tiles, kept, duration(summary.seconds), compute,
                    f" ({summary.megapixels_per_second:.4g} Mpx/s)" if mapped else "", extra=RESULT)
        return
    if summary.combinations is not None:
        for line in coverage_warnings(config.model.name or model_path.stem, list(given), config.model.modality_names,
                                      summary.combinations, results, outputs.availability is not None):
            log.warning(line)
    stale = {name: path for name in ("probabilities", "confidence", "availability")
             if getattr(outputs, name) is None and (path := sibling(output, Path("-"), name)).exists()}
    if stale:  # side outputs of an earlier map into the same -o, which this run leaves as they are
        one = len(stale) == 1
        log.warning("the raster%s of %s beside the map (%s) %s from an earlier run, not of this map; delete %s, or map with %s to "
                    "write %s anew", "" if one else "s", " and ".join(f"--{name}" for name in stale),
                    ", ".join(map(str, stale.values())), "is" if one else "are", "it" if one else "them",
                    " and ".join(f"--{name}" for name in stale), "it" if one else "them")
    rate = f": {summary.megapixels_per_second:.4g} Mpx/s" if mapped else ""
    log.info("wrote %s (%dx%d px, %d tiles%s) in %s s%s", output, summary.width, summary.height, summary.tiles, kept,
             seconds_text(summary.seconds), rate)


def report_results(model_path: Path, report: Path | None) -> dict:
    """The accuracy per sensor combination in the model's report (``report``, else the one beside the model);
    empty without one. A ``report`` that holds none of this model's is refused."""
    from mamol_core.evaluation.reports_found import model_report, report_folders

    found, _, earlier = model_report(model_path, [report] if report is not None else report_folders(model_path))
    if report is not None and found is None:
        what = ("holds an earlier model's report (written to the same model file)" if earlier else
                "holds no report mamol wrote" if report.is_dir() else "is no folder")
        raise MamolError(f"--report {report}: {what}; give the folder of a report of {model_path} (mamol-train's or "
                         "mamol-eval's), or leave --report out")
    return found["results"] if found is not None else {}


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
