"""Training a model on a scene: fit the normalisation, build the network, train it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mamol_core import distributed
from mamol_core.backbones import resolve_backbone
from mamol_core.config import BackboneSpec, ExpertSpec, LayoutSpec, MamolConfig, ModelConfig, ProtocolSpec, TrainSpec
from mamol_core.data.labels import block_holdout
from mamol_core.data.patches import PatchSampler
from mamol_core.data.pixels import PreparedScene, prepare_scene
from mamol_core.data.protocol import check_missing_names, describe_protocol
from mamol_core.data.scene import Scene
from mamol_core.device import precision_name
from mamol_core.errors import MamolError
from mamol_core.model import MaMOLClassifier, build_model, describe
from mamol_core.training.loop import Checkpointing, epoch_steps, schedule_steps, train_model
from mamol_core.training.state import RunIdentity, SavedState, differences_text, read_state

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What a training run produced; ``seconds`` of training over every process that ran it, and the
    CPU seconds to add to this process's own count for the same total (:class:`TrainingResult`)."""

    model: MaMOLClassifier
    config: MamolConfig
    prepared: PreparedScene
    sampler: PatchSampler
    history: list[float]
    seconds: float
    other_cpu_seconds: float


@dataclass
class StateFiles:
    """Training state for :func:`train_on_scene`: written to ``path`` every ``every`` steps and on
    Ctrl-C/SIGTERM; ``resume`` is a state file to continue from. With ``resume_if_same`` a state
    already at ``path`` is continued if its run had this run's settings and inputs, else replaced."""

    path: Path
    every: int = 100
    resume: Path | None = None
    resume_if_same: bool = False

    def state_to_resume(self, identity: RunIdentity, device: torch.device) -> SavedState | None:
        """The state this run continues from, if any (see the class); under torchrun every rank decides alike."""
        if self.resume is not None:
            with distributed.stop_together(device):
                saved = read_state(self.resume)
            if saved.compute != identity.compute:
                log.info("continuing on %s a run that computed on %s", identity.compute, saved.compute)
            return saved
        saved = self._same_run(identity) if self.resume_if_same and self.path.exists() else None
        return None if distributed.any_rank(saved is None, device) else saved

    def _same_run(self, identity: RunIdentity) -> SavedState | None:
        """The state at :attr:`path` if it is this run's on the same device and precision (so that its
        times add up), else ``None``."""
        try:
            saved = read_state(self.path)
        except MamolError:
            log.info("%s: not a complete training state; starting afresh (it will be replaced)", self.path)
            return None
        differing = saved.differences(identity)
        if saved.compute != identity.compute:
            differing.append(f"device and precision ({saved.compute})")
        if differing:
            log.info("%s: left by a run with other settings or inputs (%s); starting afresh (it will be replaced)",
                     self.path, differences_text(differing))
            return None
        return saved

    def how_to_continue(self) -> str:
        """What the message of an interrupted run tells the user to do."""
        return "run the same command again" if self.resume_if_same else f"continue with the same command and --resume {self.path}"


def train_on_scene(scene: Scene, backbone: BackboneSpec, experts: ExpertSpec, layout: LayoutSpec, protocol: ProtocolSpec,
                   train: TrainSpec, device: torch.device, amp_dtype: torch.dtype | None, progress_mode: str = "bar",
                   state: StateFiles | None = None, name: str | None = None) -> TrainingRun:
    """Fit normalisation, build the model (called ``name``) and train it on the scene's training pixels
    (resumably with ``state``)."""
    layout.check()
    patch_size = layout.patch_size
    check_missing_names(scene.names, protocol.missing)
    if len(scene.modalities) == 1 and protocol.missing_rate > 0:
        protocol = replace(protocol, missing_rate=0.0)
    log.info("protocol: %s", describe_protocol(scene.names, protocol.missing_rate, protocol.missing))
    held_out = None
    if train.validation > 0:
        scene, held_out = hold_out_validation(scene, train)
    prepared, specs = prepare_scene(scene, protocol, margin=patch_size, held_out=held_out, normalization=train.normalization)
    resolved, frozen = resolve_backbone(backbone)
    model_config = ModelConfig(specs, scene.classes, resolved, experts, layout, scene.grid.spec(), name)
    config = MamolConfig(model_config, protocol, train)
    torch.manual_seed(train.seed)
    model = build_model(model_config, frozen).to(device)
    log.info("backbone %s; %s", resolved.name, describe(model))
    depth = len(model.backbone.blocks)
    if experts.num_layers > depth and experts.num_layers != ExpertSpec.num_layers:  # the default means "up to 6": no word
        log.warning("--expert-layers %d: the backbone %s has %d blocks, so every one of them gets experts", experts.num_layers,
                    resolved.name, depth)
    steps, by_epochs = schedule_steps(len(prepared.train), train), epoch_steps(len(prepared.train), train)
    epochs = f"{train.epochs} epoch{'' if train.epochs == 1 else 's'}"
    log.info("training on %d pixels (%s), %d classes, device %s, %s; %d optimizer step%s (%s)", len(prepared.train),
             ", ".join(scene.names), len(scene.classes), device, precision_name(amp_dtype), steps, "" if steps == 1 else "s",
             epochs if steps == by_epochs else f"--min-steps {train.min_steps}; {epochs} would be {by_epochs}")
    share = None
    if prepared.validation is not None:
        share = len(prepared.validation) / (len(prepared.validation) + len(prepared.train))
        log.info("validation: %d pixels held out in blocks of %d px, %.0f %% of the training labels (--validation %g%s)",
                 len(prepared.validation), train.validation_block, 100 * share, train.validation,
                 "; whole blocks hold out more where classes cluster" if share > train.validation + 0.01 else "")
    sampler = PatchSampler(torch.from_numpy(prepared.data).to(device), patch_size, training_label_map(prepared, device))
    checkpointing = None
    if state is not None:
        identity = RunIdentity(config.to_json(), prepared.training_labels_digest(), f"{device.type}, {amp_dtype or torch.float32}")
        checkpointing = Checkpointing(state.path, identity, state.how_to_continue(), state.every, state.state_to_resume(identity, device))
    result = train_model(model, sampler, prepared.train, train, amp_dtype, progress_mode, checkpointing, prepared.validation)
    if result.validation is not None:
        config.validation = replace(result.validation.record, share=share)
    return TrainingRun(model, config, prepared, sampler, result.history, result.seconds, result.other_cpu_seconds)


def hold_out_validation(scene: Scene, train: TrainSpec) -> tuple[Scene, np.ndarray]:
    """The scene without its validation labels (``train.validation`` of the training labels in whole
    blocks, seeded by ``train.seed``), and those labels."""
    kept, held_out = block_holdout(scene.train_labels, train.validation, train.validation_block, train.seed)
    if not (held_out > 0).any() or not (kept > 0).any():
        raise MamolError(f"--validation {train.validation:g}: the training labels are too few or too clustered to hold out blocks of "
                         f"{train.validation_block} px for validation; label more, or train without a validation split (--validation 0)")
    return replace(scene, train_labels=kept), held_out


def training_label_map(prepared: PreparedScene, device: torch.device) -> torch.Tensor:
    """The training pixels as a label map over the window: class index + 1, 0 = not a training pixel."""
    labels = torch.zeros(prepared.data.shape[1:], dtype=torch.uint8)
    pixels = prepared.train
    labels[torch.as_tensor(pixels.rows), torch.as_tensor(pixels.cols)] = torch.as_tensor(pixels.targets + 1, dtype=torch.uint8)
    return labels.to(device)
