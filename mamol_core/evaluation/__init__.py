"""Evaluation: predictions on labelled pixels, accuracy measures, reports."""
