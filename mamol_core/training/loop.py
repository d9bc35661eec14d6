"""Training MaMOL on labelled pixels: AdamW, linear warm-up then linear decay, bf16 autocast."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from mamol_core import distributed
from mamol_core.config import TrainSpec
from mamol_core.data.patches import DIHEDRAL, PatchSampler
from mamol_core.data.pixels import PixelSet
from mamol_core.device import training_attention
from mamol_core.errors import deferred_interruptions
from mamol_core.experts.lora import LoRABank
from mamol_core.model import MaMOLClassifier
from mamol_core.progress import counter
from mamol_core.training.state import LoopPosition, RunIdentity, SavedState, save_state
from mamol_core.training.validation import ValidationTracker

log = logging.getLogger(__name__)


@dataclass
class DevicePixels:
    """A :class:`PixelSet` as tensors on the compute device."""

    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    presence: torch.Tensor

    @classmethod
    def from_set(cls, pixels: PixelSet, device: torch.device) -> "DevicePixels":
        as_tensor = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
        return cls(as_tensor(pixels.rows), as_tensor(pixels.cols), as_tensor(pixels.targets), as_tensor(pixels.presence))


#: Modules whose ``weight`` is the matrix of a linear map (decayed); LoRA banks decay both factors.
LINEAR_MAPS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def optimizer_groups(model: MaMOLClassifier, weight_decay: float, lr: float, expert_lr_scale: float = 1.0) -> list[dict]:
    """AdamW parameter groups: ``weight_decay`` on the matrices of linear maps (linear and
    convolution weights, LoRA ``A`` and ``B``) only; none on biases, norms, embeddings, the position
    and modality-type vectors or prompt tables, whose decay would pull them towards zero rather
    than regularise a mapping. With ``expert_lr_scale`` other than 1 the parameters added to the
    frozen backbone (experts, routers, prompts) get groups of their own at ``lr * expert_lr_scale``;
    at 1 there are two groups, decayed then plain, as in training states written before the scale
    existed (so those resume)."""
    inside = {id(p) for p in model.backbone.parameters()} if expert_lr_scale != 1 else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            matrix = isinstance(module, LoRABank) or (isinstance(module, LINEAR_MAPS) and name == "weight")
            groups.setdefault((not matrix, id(parameter) in inside), []).append(parameter)
    return [{"params": params, "weight_decay": 0.0 if plain else weight_decay, "lr": lr * (expert_lr_scale if expert else 1.0)}
            for (plain, expert), params in sorted(groups.items())]


def warmup_linear(total_steps: int, warmup_fraction: float):
    """LR multiplier: linear rise over the first ``warmup_fraction`` of steps, then linear decay to 0."""
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def epoch_steps(pixels: int, spec: TrainSpec) -> int:
    """Optimizer steps of ``spec.epochs`` passes over ``pixels`` samples."""
    return spec.epochs * math.ceil(pixels / spec.batch_size)


def schedule_steps(pixels: int, spec: TrainSpec) -> int:
    """Optimizer steps of a run: :func:`epoch_steps`, at least ``spec.min_steps`` (and one)."""
    return max(epoch_steps(pixels, spec), spec.min_steps, 1)


@dataclass
class Checkpointing:
    """Where and how often a run writes its training state (:mod:`mamol_core.training.state`), whose
    run it is, a state to resume from, and what an interrupted run's message tells the user to do."""

    path: Path
    identity: RunIdentity
    how_to_continue: str
    every: int = 100
    resume: SavedState | None = None


@dataclass
class TrainingResult:
    """Mean loss per epoch (the last one may be cut short by the step count or by early stopping), with a validation split
    the tracker whose best weights the model now holds, the training's wall seconds over every
    process that ran it, and the CPU seconds to add to this process's own count for the same total
    (what earlier processes spent training, less what this one spent writing states)."""

    history: list[float]
    validation: ValidationTracker | None
    seconds: float
    other_cpu_seconds: float


def train_model(model: MaMOLClassifier, sampler: PatchSampler, pixels: PixelSet, spec: TrainSpec,
                amp_dtype: torch.dtype | None, progress_mode: str = "bar", checkpointing: Checkpointing | None = None,
                validation: PixelSet | None = None) -> TrainingResult:
    """Train the trainable parameters of ``model`` on ``pixels`` for :func:`schedule_steps` steps.

    Each sample places its labelled (anchor) pixel at a random position of the patch, so every
    position of the per-pixel head learns, which dense tile inference relies on, and is turned or
    flipped by a random symmetry of the square. The presence mask is the anchor's protocol
    assignment. Every labelled training pixel inside the patch contributes to the loss under that
    mask (training labels come in clusters, so this multiplies the signal per pass); ``sampler``
    must hold the training label map.
    With ``rotation`` ``any`` each patch is also turned by a random angle (0-90 degrees on top of
    the square's symmetries), so that oriented textures (crop rows) are learned in every direction.

    With ``checkpointing`` the training state is written every ``every`` steps and when Ctrl-C or
    SIGTERM arrives (at the end of the step under way, then the interruption goes on), and a run
    given ``resume`` continues from that state with the same random draws.

    With ``validation`` pixels (held out of the training labels) the model is scored on them
    ``spec.validation_checks`` times (:class:`ValidationTracker`), ends with the weights that scored
    best, and stops after ``spec.patience`` checks without improvement.
    """
    device = sampler.data.device
    data = DevicePixels.from_set(pixels, device)
    generator = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    optimizer = torch.optim.AdamW(optimizer_groups(model, spec.weight_decay, spec.lr, spec.expert_lr_scale), lr=spec.lr)
    total_steps = schedule_steps(len(pixels), spec)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total_steps, spec.warmup_fraction))
    position = LoopPosition()
    tracker = ValidationTracker(validation, sampler, spec, total_steps, amp_dtype) if validation is not None else None
    if checkpointing is not None and checkpointing.resume is not None:
        checkpointing.resume.check_config(checkpointing.identity)
        position = checkpointing.resume.restore(model, optimizer, scheduler, generator, device)
        if tracker is not None:
            tracker.restore(checkpointing.resume.tensors, checkpointing.resume.meta["validation"])
        log.info("resuming at step %d of %d from %s", position.step, total_steps, checkpointing.resume.path)
    earlier = (position.seconds, position.cpu_seconds)
    clock = (time.perf_counter(), time.process_time())
    writing = [0.0, 0.0]  # wall and CPU seconds this process spent writing states: not training time

    def training_time() -> tuple[float, float]:
        return (earlier[0] + time.perf_counter() - clock[0] - writing[0], earlier[1] + time.process_time() - clock[1] - writing[1])

    ranks = distributed.current()

    def save() -> None:
        if checkpointing is None:
            return
        position.seconds, position.cpu_seconds = training_time()
        started = (time.perf_counter(), time.process_time())
        with distributed.stop_together(device):  # a state rank 0 cannot write (a full disk) stops every rank
            if ranks.main:
                save_state(checkpointing.path, checkpointing.identity, model, optimizer, scheduler,
                           generator, position, tracker.state() if tracker is not None else None)
        writing[0] += time.perf_counter() - started[0]
        writing[1] += time.process_time() - started[1]

    size = sampler.size
    model.train()
    network = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                      find_unused_parameters=True) if ranks.distributed else model
    bar = counter(total_steps, "training", "step", progress_mode if ranks.main else "none")
    bar.update(position.step)
    stopped = tracker is not None and tracker.should_stop()  # a resumed run that had stopped early stays stopped
    with deferred_interruptions(checkpointing is not None) as interrupted:
        while position.step < total_steps and not stopped:
            if position.order is None:
                position.order = torch.randperm(len(pixels), generator=generator).to(device)
                position.epoch_start, position.total, position.seen = position.step, 0.0, 0
            batches = position.order.split(spec.batch_size)[: total_steps - position.epoch_start]
            for batch in batches[position.step - position.epoch_start :]:
                count = len(batch)
                target_i = torch.randint(size, (count,), generator=generator).to(device)
                target_j = torch.randint(size, (count,), generator=generator).to(device)
                symmetry = torch.randint(len(DIHEDRAL), (count,), generator=generator).to(device)
                angle = None
                if spec.rotation == "any":  # the square's symmetries turned by a further 0-90 degrees
                    angle = (torch.rand(count, generator=generator) * (math.pi / 2)).to(device)
                presence = data.presence[batch]
                if spec.modality_dropout > 0:
                    presence = drop_one_modality(presence, spec.modality_dropout, generator)
                # every rank draws the whole batch's randomness, then takes its share of the samples; a rank
                # left without one (a last batch smaller than the world) computes sample 0 with weight 0
                mine = slice(ranks.rank, None, ranks.world) if ranks.rank < count else slice(0, 1)
                weight = 1.0 if ranks.rank < count else 0.0
                batch, target_i, target_j, presence = batch[mine], target_i[mine], target_j[mine], presence[mine]
                symmetry = symmetry[mine]
                angle = angle[mine] if angle is not None else None
                x, labels = sampler.gather_with_labels(data.rows[batch], data.cols[batch], target_i, target_j, symmetry, angle)
                autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
                with training_attention(device), autocast:
                    logits = network(x, presence)
                loss_sum = F.cross_entropy(logits.float(), labels.long() - 1, ignore_index=-1, reduction="sum") * weight
                # the mean over the whole batch's labelled pixels, whichever rank holds them (DDP averages over ranks)
                sums = distributed.all_sum(torch.stack([loss_sum.detach(), (labels > 0).sum().to(loss_sum.dtype) * weight]))
                loss = loss_sum * ranks.world / sums[1].clamp_min(1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                position.total += (sums[0] / sums[1].clamp_min(1)).item() * count
                position.seen += count
                position.step += 1
                bar.update(1)
                if position.step == position.epoch_start + len(batches):
                    position.epoch += 1
                    position.history.append(position.total / position.seen)
                    position.order = None
                    bar.set_postfix(epoch=position.epoch, loss=round(position.history[-1], 4))
                if tracker is not None and tracker.due(position.step):
                    stopped = tracker.check(model, position.step)
                    bar.set_postfix(epoch=position.epoch, validation_oa=tracker.record.checks[-1][1])
                    if stopped and position.order is not None:  # stopped inside an epoch: its loss so far ends the history
                        position.history.append(position.total / position.seen)
                if distributed.any_rank(bool(interrupted), device):
                    save()
                    bar.close()
                    if ranks.main:
                        log.warning("training state at step %d of %d saved to %s; %s", position.step, total_steps,
                                    checkpointing.path, checkpointing.how_to_continue)
                    raise interrupted[0] if interrupted else KeyboardInterrupt()
                if stopped:
                    break
                if checkpointing is not None and position.step % checkpointing.every == 0 and position.step < total_steps:
                    save()
        save()  # the end of training: an interruption from here on (scoring, writing) does not train again
        if distributed.any_rank(bool(interrupted), device):  # arrived in the last step: every rank stops, the caller cleans up
            bar.close()
            raise interrupted[0] if interrupted else KeyboardInterrupt()
    bar.close()
    if tracker is not None:
        tracker.finish(model, position.step)
    distributed.check_same_weights(model, device)
    model.eval()
    return TrainingResult(position.history, tracker, training_time()[0], earlier[1] - writing[1])


def drop_one_modality(presence: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """``presence`` ``[n, M]`` with one present modality removed, chosen at random, from about ``share``
    of the samples that have two or more (a sample never loses its last one). Draws from ``generator``
    for every sample, so all ranks draw alike."""
    count, modalities = presence.shape
    chosen = torch.rand(count, generator=generator).to(presence.device) < share
    scores = torch.rand(count, modalities, generator=generator).to(presence.device)
    victim = torch.where(presence, scores, torch.full_like(scores, -1.0)).argmax(1)
    drop = chosen & (presence.sum(1) >= 2)
    out = presence.clone()
    out[drop.nonzero().flatten(), victim[drop]] = False
    return out
