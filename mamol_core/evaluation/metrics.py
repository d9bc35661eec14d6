"""Accuracy measures of a classification: confusion matrix, OA, Cohen's kappa, AA, per-class accuracy."""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` counts; rows are reference classes, columns predictions."""
    flat = np.asarray(truth, np.int64) * num_classes + np.asarray(predicted, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def summarize(matrix: np.ndarray) -> dict:
    """OA, kappa and AA (in %), producer's and user's accuracy per class (in %, None where undefined).

    Kappa is undefined (None) when chance agreement is total: reference and predictions hold one and
    the same single class."""
    matrix = np.asarray(matrix, np.float64)
    total = matrix.sum()
    if total == 0:
        return {"samples": 0, "oa": None, "kappa": None, "aa": None, "producer_accuracy": [], "user_accuracy": []}
    diagonal = np.diag(matrix)
    reference, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    observed = diagonal.sum() / total
    expected = (reference * predicted).sum() / total**2
    kappa = None if expected == 1 else (observed - expected) / (1 - expected)  # one class in reference and predictions
    with np.errstate(invalid="ignore", divide="ignore"):
        producer = np.where(reference > 0, diagonal / reference, np.nan)
        user = np.where(predicted > 0, diagonal / predicted, np.nan)
    as_list = lambda v: [None if np.isnan(x) else round(100 * float(x), 4) for x in v]  # noqa: E731
    return {
        "samples": int(total),
        "oa": 100 * float(observed),
        "kappa": None if kappa is None else 100 * float(kappa),
        "aa": 100 * float(np.nanmean(producer)),
        "producer_accuracy": as_list(producer),
        "user_accuracy": as_list(user),
    }


def measure_text(value: float | None) -> str:
    """A measure in % with two decimals, or ``undefined``."""
    return "undefined" if value is None else f"{value:.2f}"


def summary_line(name: str, summary: dict) -> str:
    """One log line of a summary: OA, kappa and AA, and the sample count."""
    return (f"{name:<28} OA {measure_text(summary['oa']):>6}  kappa {measure_text(summary['kappa']):>6}  "
            f"AA {measure_text(summary['aa']):>6}  (n={summary['samples']})")
