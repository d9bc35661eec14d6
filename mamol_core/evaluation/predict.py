"""Evaluating a model on labelled pixels, overall and per missing pattern."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from mamol_core.data.patches import PatchSampler
from mamol_core.data.pixels import PixelSet
from mamol_core.data.protocol import pattern_name
from mamol_core.errors import MamolError
from mamol_core.evaluation.metrics import confusion_matrix, summarize
from mamol_core.mapping.dense import inference_model, tiles_touching
from mamol_core.model import MaMOLClassifier
from mamol_core.progress import progress

log = logging.getLogger(__name__)
#: A prediction of no class: the pixel got none (dense scoring, where no tile its sensors cover enough reached it).
NO_PREDICTION = -1


@dataclass
class Evaluation:
    """Confusion matrices and summaries: ``overall`` and one per presence pattern."""

    class_names: list[str]
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    modality_names: list[str] = field(default_factory=list)  # the model's, in the order pattern names use

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
    model = inference_model(model, amp_dtype)
    dtype = amp_dtype or torch.float32
    rows = torch.as_tensor(pixels.rows, device=device)
    cols = torch.as_tensor(pixels.cols, device=device)
    presence = torch.as_tensor(pixels.presence, device=device)
    centre = sampler.size // 2
    batches = list(torch.arange(len(pixels), device=device).split(batch_size))
    out = []
    for batch in progress(batches, len(batches), "evaluating", "batch", progress_mode):
        logits = model(sampler.centred(rows[batch], cols[batch]).to(dtype), presence[batch])
        out.append(logits[:, :, centre, centre].argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def evaluate_predictions(pixels: PixelSet, predicted: np.ndarray, class_names: list[str], modality_names: list[str]) -> Evaluation:
    """Overall and per-pattern confusion matrices of ``predicted`` against ``pixels.targets``; pixels
    predicted :data:`NO_PREDICTION` are left out."""
    count = len(class_names)
    scored = predicted != NO_PREDICTION
    if not scored.all():
        pixels = PixelSet(pixels.rows[scored], pixels.cols[scored], pixels.targets[scored], pixels.presence[scored])
        predicted = predicted[scored]
    result = Evaluation(class_names, modality_names=list(modality_names))
    result.matrices["overall"] = confusion_matrix(pixels.targets, predicted, count)
    patterns, inverse = np.unique(pixels.presence, axis=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        chosen = inverse.reshape(-1) == index
        result.matrices[pattern_name(pattern, modality_names)] = confusion_matrix(pixels.targets[chosen], predicted[chosen], count)
    return result


@torch.inference_mode()
def predict_pixels_dense(model: MaMOLClassifier, data: torch.Tensor, valid: torch.Tensor, pixels: PixelSet, stride: int,
                         batch_size: int, amp_dtype: torch.dtype | None, progress_mode: str = "bar") -> np.ndarray:
    """Class index of each pixel from blended dense tiles, one pass per presence pattern over the
    tiles that hold pixels of that pattern (the pattern is forced on every tile); :data:`NO_PREDICTION`
    where no such tile holds enough valid data of the pattern's sensors (a map leaves those pixels empty)."""
    from mamol_core.mapping.dense import DensePredictor
    from mamol_core.progress import counter

    predictor = DensePredictor(model, stride, batch_size, amp_dtype)
    patterns, inverse = np.unique(pixels.presence, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    all_origins = predictor.origins(*data.shape[1:]).to(data.device)
    jobs = []
    for index, pattern in enumerate(patterns):
        chosen = inverse == index
        mark = torch.zeros(data.shape[1:], dtype=torch.bool, device=data.device)
        mark[torch.as_tensor(pixels.rows[chosen]), torch.as_tensor(pixels.cols[chosen])] = True
        jobs.append((chosen, torch.as_tensor(pattern), all_origins[tiles_touching(mark, all_origins, predictor.size)]))
    predicted = np.zeros(len(pixels), np.int64)
    bar = counter(sum(len(o) for _, _, o in jobs), "evaluating (dense)", "tile", progress_mode)
    try:
        for chosen, pattern, origins in jobs:
            result = predictor.predict(data, valid, origins, force=pattern, on_tiles=bar.update)
            rows, cols = torch.as_tensor(pixels.rows[chosen]), torch.as_tensor(pixels.cols[chosen])
            classes = result.probabilities[:, rows, cols].argmax(0)
            predicted[chosen] = torch.where(result.predicted[rows, cols], classes, NO_PREDICTION).cpu().numpy()
    finally:
        bar.close()
    missed = int(np.sum(predicted == NO_PREDICTION))
    if missed and missed == len(pixels):
        raise MamolError(f"none of the {missed} test pixels lies where a tile holds enough valid data of the sensors scored there "
                         "(dense scoring predicts nothing there, as a map leaves them empty); score with --mode pixel")
    if missed:
        log.warning("%d of the %d test pixels lie where no tile holds enough valid data of the sensors scored there (a map leaves "
                    "them empty): dense scoring leaves them out (--mode pixel scores each from a patch centred on it)", missed, len(pixels))
    return predicted
