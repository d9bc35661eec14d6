"""Writing an accuracy report: metrics.json, metrics.csv, confusion matrices as CSV and a PNG plot,
and report.html, one page with all of it for a browser or QGIS."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import unicodedata
from pathlib import Path

import numpy as np

from mamol_core.atomic import atomic_paths, created_folder
from mamol_core.evaluation.html import pattern_title, report_html
from mamol_core.evaluation.metrics import measure_text
from mamol_core.evaluation.predict import Evaluation
from mamol_core.evaluation.reports_found import REPORT_FILES
from mamol_core.figures import glyphs_told


def slug(name: str) -> str:
    """``name`` as part of a file or column name: its letters and digits in any script, lower case, runs of anything
    else as ``_`` ("Forêt dense" -> "forêt_dense", "草地" stays)."""
    return re.sub(r"[\W_]+", "_", unicodedata.normalize("NFC", name)).strip("_").lower()


def accuracy_columns(class_names: list[str]) -> list[str]:
    """The metrics.csv column of each class's accuracy, ``acc_<slug>``; where names give one slug, a
    number (the class's position, then more) makes each unique."""
    columns = [f"acc_{slug(name) or 'class'}" for name in class_names]
    unique: list[str] = []
    for index, column in enumerate(columns):
        candidate, extra = (f"{column}_{index + 1}" if columns.count(column) > 1 else column), 0
        while candidate in unique or candidate in columns[index + 1 :]:
            extra += 1
            candidate = f"{column}_{index + 1}_{extra}"
        unique.append(candidate)
    return unique


def write_report(folder: Path, evaluation: Evaluation, context: dict) -> Path:
    """Write the report files into ``folder`` (created) and return the path of ``metrics.json``.
    Every file is written under a temporary name and renamed only when all are complete; then the
    confusion CSVs of an earlier report there that this one does not write are removed."""
    folder = Path(folder)
    summaries = evaluation.summaries
    confusions = {name: confusion_file(folder, name) for name in evaluation.matrices}
    files = [*(folder / name for name in REPORT_FILES), *confusions.values()]
    with created_folder(folder), atomic_paths(files) as temporaries:
        earlier = earlier_confusions(folder)
        temporary = dict(zip(files, temporaries))
        payload = {"context": context, "classes": evaluation.class_names,
                   "results": {name: {**summary, "confusion_matrix": evaluation.matrices[name].tolist()} for name, summary in summaries.items()}}
        temporary[folder / "metrics.json"].write_text(json.dumps(payload, indent=1))
        with open(temporary[folder / "metrics.csv"], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["pattern", "samples", "oa", "kappa", "aa", *accuracy_columns(evaluation.class_names)])
            for name, s in summaries.items():
                writer.writerow([name, s["samples"], *map(measure_text, [s["oa"], s["kappa"], s["aa"], *s["producer_accuracy"]])])
        for name, matrix in evaluation.matrices.items():
            with open(temporary[confusions[name]], "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["reference \\ predicted", *evaluation.class_names])
                for class_name, row in zip(evaluation.class_names, matrix):
                    writer.writerow([class_name, *row.tolist()])
        plot_confusions(evaluation, temporary[folder / "confusion.png"])
        page = report_html(evaluation, context, evaluation.modality_names, temporary[folder / "confusion.png"].read_bytes())
        temporary[folder / "report.html"].write_text(page, encoding="utf-8")
    for stale in set(earlier) - set(confusions.values()):  # an earlier report's patterns this one lacks
        with contextlib.suppress(OSError):  # the report is complete; a file that cannot go is left
            stale.unlink(missing_ok=True)
    return folder / "metrics.json"


def confusion_file(folder: Path, pattern: str) -> Path:
    """Where a report in ``folder`` keeps the confusion matrix of ``pattern`` (``overall``, ``missing sar``)."""
    return Path(folder) / f"confusion_{slug(pattern)}.csv"


def earlier_confusions(folder: Path) -> list[Path]:
    """The confusion CSVs an earlier report in ``folder`` wrote, by the patterns its ``metrics.json``
    lists ([] where there is none or it cannot be read): files that would otherwise outlive it."""
    try:
        results = json.loads((Path(folder) / "metrics.json").read_text())["results"]
        return [confusion_file(folder, name) for name in results]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def plot_confusions(evaluation: Evaluation, path: Path) -> None:
    """One row-normalised confusion matrix panel per pattern, overall first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(evaluation.matrices)
    count = len(evaluation.class_names)
    side = 1.2 + 0.45 * count
    fig, axes = plt.subplots(1, len(names), figsize=(side * len(names), side + 0.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        matrix = evaluation.matrices[name]
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        summary = evaluation.summaries[name]
        oa = "n/a" if summary["oa"] is None else f"{summary['oa']:.1f}%"
        title = pattern_title(name, evaluation.modality_names)
        ax.set_title(f"{title}\nOA {oa}, n={summary['samples']}", fontsize=9)
        ax.set_xticks(range(count), evaluation.class_names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(count), evaluation.class_names, fontsize=7)
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=6, color="white" if share[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted", fontsize=8)
    axes[0][0].set_ylabel("reference", fontsize=8)
    with glyphs_told("the confusion-matrix picture"):
        fig.tight_layout()
        fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
