"""Finding a model's report and reading what it says of each sensor combination (read without torch:
mamol-info uses it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mamol_core.data.protocol import pattern_name
from mamol_core.errors import MamolError
from mamol_core.modelfile.header import DIGEST_KEY, header_digest


#: Fewer test pixels than this in a sensor combination say little of its accuracy: mamol-info marks them and
#: mamol-map warns of maps from them (the QGIS plugin's ``algorithms.FEW_PIXELS`` marks them in the map dialog's help panel).
FEW_PIXELS = 100


#: The files a report writes into its folder, besides one ``confusion_<pattern>.csv`` per sensor combination.
REPORT_FILES = ("metrics.json", "metrics.csv", "confusion.png", "report.html")


def check_report_folder(folder: Path, flag: str) -> None:
    """Stop where the folder ``folder`` (given as ``flag``) holds files of a report's names that no mamol report
    wrote (an analyst's own ``report.html``, say): writing the report would replace them."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    written = re.compile(r"confusion_(overall|complete|missing_.+)\.csv")  # the confusion tables a report writes
    taken = sorted(p.name for p in folder.iterdir() if p.name in REPORT_FILES or written.fullmatch(p.name))
    if taken and not is_report(folder):
        raise MamolError(f"{flag} {folder}: holds {', '.join(taken)}, which no mamol report wrote and a report there would replace; "
                         "give the report a folder of its own (a new or an empty one)")


def is_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report mamol wrote (its ``metrics.json`` has a context and an overall result)."""
    try:
        report = json.loads((Path(folder) / "metrics.json").read_text())
        return isinstance(report["context"], dict) and "overall" in report["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def report_folders(model: Path) -> list[Path]:
    """Where a model's training report lies unless told otherwise: ``<model>.report``, then ``<model>_report``."""
    return [model.with_suffix(".report"), model.with_name(f"{model.stem}_report")]


def model_report(model: Path, folders: list[Path]) -> tuple[dict | None, Path | None, list[Path]]:
    """The first report among ``folders`` that scored the ``model`` file (its context records the file's header
    digest, or none: mamol 0.3.0 recorded none) and its folder; then the folders holding an earlier model's
    report (one written to the same path). ``(None, None, earlier)`` without one."""
    earlier, digest = [], header_digest(model)
    for folder in folders:
        try:
            report = json.loads((Path(folder) / "metrics.json").read_text())
            report["results"]["overall"]  # noqa: B018 - a report holds its overall accuracy
            if report["context"].get(DIGEST_KEY, digest) != digest:
                earlier.append(Path(folder))
                continue
            return report, Path(folder), earlier
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, or not a report
            continue
    return None, None, earlier


def combination_warning(model_name: str, given: list[str], names: list[str], results: dict) -> str | None:
    """A warning where a report's ``results`` show the sensors ``given`` (of the model's ``names``) map poorly
    (OA under 70 %, or 10 points under all sensors), with the figures, or score them on fewer than
    :data:`FEW_PIXELS` test pixels or none (a combination the protocol left out: one of three sensors alone);
    ``None`` where they map well, with every sensor, or without results."""
    if not results or set(names) <= set(given):
        return None
    these, complete = results.get(pattern_name(np.isin(names, given), names)), results.get("complete")
    sensors = " + ".join(name for name in names if name in given)
    if not these or these.get("samples", FEW_PIXELS) < FEW_PIXELS:
        scored = f"on only {these['samples']} of its test pixels" if these else "on none of its test pixels"
        return (f"{model_name} was scored from {sensors} {scored}, too few to tell how well it maps from "
                f"{'this sensor' if len(given) == 1 else 'these sensors'}; "
                f"evaluate it on test labels with {'this sensor' if len(given) == 1 else 'these sensors'} alone (mamol-eval) before "
                "relying on the map")
    best = complete.get("oa") if complete else None
    if these.get("oa") is not None and (these["oa"] < 70 or (best is not None and best - these["oa"] > 10)):
        return (f"{model_name} scored {these['oa']:.2f} % overall accuracy from {sensors} on its test pixels"
                + (f" (all sensors: {best:.2f} %)" if best is not None else "")
                + f"; expect a weaker map from {'this sensor' if len(given) == 1 else 'these sensors'}")
    return None


#: A sensor combination that the report shows weak and that a map was predicted from on at least this share of its
#: pixels (where the other sensors given hold no data) is warned about after the map.
WEAK_SHARE = 0.05


def coverage_warnings(model_name: str, given: list[str], names: list[str], combinations: np.ndarray, results: dict,
                      availability: bool = False) -> list[str]:
    """Warnings for the sensor combinations, other than every sensor ``given``, that a map was predicted from on at
    least :data:`WEAK_SHARE` of its pixels (``combinations``: pixels per availability code, bit i for ``names[i]``)
    and that the report's ``results`` show weak (:func:`combination_warning`); they point to the availability raster
    where the map wrote one (``availability``)."""
    mapped = int(combinations[1:].sum())
    lines: list[str] = []
    if not mapped:
        return lines
    for code in np.flatnonzero(combinations[1:]) + 1:
        used = [name for bit, name in enumerate(names) if code >> bit & 1]
        share = combinations[code] / mapped
        if set(used) == set(given) or share < WEAK_SHARE:
            continue
        warning = combination_warning(model_name, used, names, results)
        if warning:
            where = "the raster of --availability shows where" if availability else "map with --availability to see where"
            lines.append(f"{share:.0%} of the map ({combinations[code]} px) was predicted from {' + '.join(used)} alone, the other "
                         f"sensors given holding no data there ({where}): {warning}")
    return lines


def is_training_report(folder: Path, model: Path) -> bool:
    """Whether ``folder`` holds the report mamol-train wrote after training the ``model`` file (its context records
    the training time; :func:`model_report`'s rule says it scored this file); not one of an earlier model
    written to the same path. ``model`` is a readable model file."""
    report = model_report(model, [folder])[0]
    return report is not None and "train_seconds" in report["context"]
