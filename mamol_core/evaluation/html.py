"""The accuracy report as one self-contained HTML page (the confusion-matrix picture embedded), for
a browser or QGIS: overall accuracy, kappa, per-class accuracy, accuracy per sensor combination."""

from __future__ import annotations

import base64
from html import escape

from mamol_core.evaluation.metrics import measure_text
from mamol_core.evaluation.predict import Evaluation

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f0f0f0}.headline{font-size:1.3em}.note{color:#666;font-size:.9em}img{max-width:100%}"""


def sensors_text(pattern: str, modality_names: list[str]) -> str:
    """``complete`` / ``missing a+b`` as the sensors that were used: ``hsi + lidar (all)``."""
    if pattern == "complete":
        return " + ".join(modality_names) + " (all)"
    absent = pattern.removeprefix("missing ").split("+")
    present = [name for name in modality_names if name not in absent]
    return " + ".join(present) + " only" if present else pattern


def pattern_title(name: str, modality_names: list[str]) -> str:
    """A result's title for people: ``overall``, or the sensors used (:func:`sensors_text`) where the names are known."""
    return name if name == "overall" or not modality_names else sensors_text(name, modality_names)


def cell(value: float | None) -> str:
    return "–" if value is None else measure_text(value)


def report_html(evaluation: Evaluation, context: dict, modality_names: list[str], confusion_png: bytes) -> str:
    """The page: what was scored (``context``), the headline, per sensor combination, per class, the confusion matrices."""
    summaries = evaluation.summaries
    overall = summaries["overall"]
    title = f"Accuracy report — {escape(str(context.get('model', 'mamol model')))}"
    rows = [f"<tr><td>{escape(str(key).replace('_', ' '))}</td><td>{escape(str(value))}</td></tr>"
            for key, value in context.items() if not isinstance(value, dict) and key != "warnings"]
    said = "".join(f"<li>{escape(str(line))}</li>" for line in context.get("warnings") or [])
    warned = (f"<h2>Warnings about the inputs</h2>\n<p class=\"note\">What mamol said while it read the inputs and labels of this "
              f"report (and, for a training report, trained): an input in another unit or scale, or with undeclared fill, lowers the "
              f"accuracy below.</p>\n<ul>{said}</ul>\n" if said else "")
    rows += [f"<tr><td>{escape(key)}: {escape(inner)}</td><td>{escape(str(v))}</td></tr>"
             for key, value in context.items() if isinstance(value, dict) for inner, v in value.items()]
    combinations = [f"<tr><td>{escape(sensors_text(name, modality_names))}</td><td>{s['samples']}</td><td>{cell(s['oa'])}</td>"
                    f"<td>{cell(s['kappa'])}</td><td>{cell(s['aa'])}</td></tr>"
                    for name, s in summaries.items() if name != "overall"]
    reference = evaluation.matrices["overall"].sum(axis=1)
    classes = [f"<tr><td>{escape(name)}</td><td>{int(count)}</td><td>{cell(producer)}</td><td>{cell(user)}</td></tr>"
               for name, count, producer, user in zip(evaluation.class_names, reference, overall["producer_accuracy"],
                                                      overall["user_accuracy"])]
    picture = base64.b64encode(confusion_png).decode("ascii")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head><body>
<h1>{title}</h1>
<p class="headline">Overall accuracy <b>{cell(overall['oa'])} %</b>, kappa <b>{cell(overall['kappa'])}</b>,
average accuracy {cell(overall['aa'])} % on {overall['samples']} test pixels.</p>
{warned}<h2>Accuracy per sensor combination</h2>
<p class="note">Test pixels are scored with the sensors the missing-modality protocol left them; a combination the
model is weak on scores low here, and maps made from those sensors alone will be as weak.</p>
<table><tr><th>sensors used</th><th>pixels</th><th>OA %</th><th>kappa</th><th>AA %</th></tr>
{''.join(combinations)}</table>
<h2>Accuracy per class</h2>
<p class="note">Producer's accuracy: share of the reference pixels of a class that were mapped as it (recall).
User's accuracy: share of the pixels mapped as a class that are it (precision). – : no pixel to measure.</p>
<table><tr><th>class</th><th>reference pixels</th><th>producer's accuracy %</th><th>user's accuracy %</th></tr>
{''.join(classes)}</table>
<h2>Confusion matrices</h2>
<img alt="confusion matrices, overall and per sensor combination" src="data:image/png;base64,{picture}">
<h2>What was scored</h2>
<table>{''.join(rows)}</table>
</body></html>
"""
