"""Evaluating a model on labelled pixels, overall and per missing pattern."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mamol_core.metrics import confusion_matrix, summarize
from mamol_core.model import MaMOLClassifier
from mamol_core.patches import PatchSampler
from mamol_core.progress import progress
from mamol_core.protocol import pattern_name
from mamol_core.samples import PixelSet


@dataclass
class Evaluation:
    """Confusion matrices and summaries: ``overall`` and one per presence pattern."""

    class_names: list[str]
    matrices: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def summaries(self) -> dict[str, dict]:
        return {name: summarize(matrix) for name, matrix in self.matrices.items()}

    @property
    def overall(self) -> dict:
        return summarize(self.matrices["overall"])


@torch.inference_mode()
def predict_pixels(model: MaMOLClassifier, sampler: PatchSampler, pixels: PixelSet, batch_size: int,
                   amp_dtype: torch.dtype | None, progress_mode: str = "bar") -> np.ndarray:
    """Class index of each pixel from a patch centred on it (per-pixel patch classification)."""
    device = sampler.data.device
    rows = torch.as_tensor(pixels.rows, device=device)
    cols = torch.as_tensor(pixels.cols, device=device)
    presence = torch.as_tensor(pixels.presence, device=device)
    centre = sampler.size // 2
    batches = list(torch.arange(len(pixels), device=device).split(batch_size))
    out = []
    for batch in progress(batches, len(batches), "evaluating", "batch", progress_mode):
        x = sampler.centred(rows[batch], cols[batch])
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x, presence[batch])
        out.append(logits[:, :, centre, centre].argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def evaluate_predictions(pixels: PixelSet, predicted: np.ndarray, class_names: list[str], modality_names: list[str]) -> Evaluation:
    """Overall and per-pattern confusion matrices of ``predicted`` against ``pixels.targets``."""
    count = len(class_names)
    result = Evaluation(class_names)
    result.matrices["overall"] = confusion_matrix(pixels.targets, predicted, count)
    patterns, inverse = np.unique(pixels.presence, axis=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        chosen = inverse.reshape(-1) == index
        result.matrices[pattern_name(pattern, modality_names)] = confusion_matrix(pixels.targets[chosen], predicted[chosen], count)
    return result
