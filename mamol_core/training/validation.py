"""Early stopping on a validation split carved from the training labels: the model is scored on it
at checks spread over the schedule, the weights that scored best are kept, and the run stops once
the score has not improved for ``patience`` checks."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from mamol_core import distributed
from mamol_core.config import MAX_CHECK_PIXELS, TrainSpec, ValidationRecord
from mamol_core.data.patches import PatchSampler
from mamol_core.data.pixels import PixelSet
from mamol_core.evaluation.predict import predict_pixels
from mamol_core.model import MaMOLClassifier

log = logging.getLogger(__name__)

#: Prefix of the tracker's tensors in a training state file.
STATE_PREFIX = "validation."


class ValidationTracker:
    """Scores a model on held-out pixels every :attr:`every` steps (one patch centred on each pixel,
    under the pixel's protocol presence mask) and keeps the best trainable weights."""

    def __init__(self, pixels: PixelSet, sampler: PatchSampler, spec: TrainSpec, total_steps: int,
                 amp_dtype: torch.dtype | None) -> None:
        self.pixels = pixels.sample(MAX_CHECK_PIXELS, spec.seed)
        self.sampler = sampler
        self.amp_dtype = amp_dtype
        self.patience = spec.patience
        self.total_steps = total_steps
        self.every = max(1, math.ceil(total_steps / max(1, spec.validation_checks)))
        self.record = ValidationRecord(pixels=len(pixels))
        self.best: dict[str, torch.Tensor] = {}
        self.stale = 0

    def due(self, step: int) -> bool:
        """Whether a check runs after ``step`` steps (every :attr:`every` steps and after the last)."""
        return step % self.every == 0 or step == self.total_steps

    def check(self, model: MaMOLClassifier, step: int) -> bool:
        """Score ``model`` after ``step`` steps, keep its weights if they scored best so far; returns
        whether the run should stop (``patience`` checks in a row without improvement)."""
        model.eval()
        predicted = predict_pixels(model, self.sampler, self.pixels, 256, self.amp_dtype, "none")
        model.train()
        device = self.sampler.data.device
        correct = float(np.sum(predicted == self.pixels.targets))
        # every rank scores the same pixels with the same weights; the sum keeps their decisions identical
        totals = distributed.all_sum(torch.tensor([correct, float(len(self.pixels))], dtype=torch.float64, device=device))
        oa = round(100.0 * totals[0].item() / max(totals[1].item(), 1.0), 2)
        self.record.checks.append([step, oa])
        if not self.best or oa > self.record.best_oa:
            self.record.best_oa, self.record.best_step, self.stale = oa, step, 0
            self.best = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        else:
            self.stale += 1
        return self.should_stop()

    def should_stop(self) -> bool:
        """Whether the last ``patience`` checks in a row brought no improvement (never with patience 0)."""
        return self.patience > 0 and self.stale >= self.patience

    def finish(self, model: MaMOLClassifier, steps_run: int) -> ValidationRecord:
        """Put the best weights back into ``model``; returns the record of the run's checks."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in self.best:
                    p.copy_(self.best[name])
        self.record.steps_run = steps_run
        self.record.stopped_early = steps_run < self.total_steps
        log.info("validation on %d held-out pixels%s: best OA %.2f %% after step %d of %d%s", self.record.pixels,
                 self.record.sample_text(), self.record.best_oa, self.record.best_step, steps_run,
                 f" (stopped early, of {self.total_steps} planned: no gain in {self.patience} checks)" if self.record.stopped_early else "")
        return self.record

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON metadata that a training state file keeps of the tracker."""
        tensors = {f"{STATE_PREFIX}{name}": t.to("cpu").contiguous() for name, t in self.best.items()}
        return tensors, {"checks": self.record.checks, "best_step": self.record.best_step, "best_oa": self.record.best_oa,
                         "stale": self.stale}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Continue from :meth:`state`'s output, as read back from a training state file."""
        device = self.sampler.data.device
        self.best = {k[len(STATE_PREFIX):]: t.to(device) for k, t in tensors.items() if k.startswith(STATE_PREFIX)}
        self.record.checks = [list(c) for c in meta["checks"]]
        self.record.best_step, self.record.best_oa, self.stale = meta["best_step"], meta["best_oa"], meta["stale"]
