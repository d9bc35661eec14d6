"""Scene-level workflows shared by the command line and the benchmarks: train, then evaluate."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import torch

from mamol_core.backbones import resolve_backbone
from mamol_core.config import BackboneSpec, ExpertSpec, LayoutSpec, MamolConfig, ModelConfig, ProtocolSpec, TrainSpec
from mamol_core.errors import MamolError
from mamol_core.dense import default_stride
from mamol_core.evaluate import Evaluation, evaluate_predictions, predict_pixels, predict_pixels_dense
from mamol_core.model import MaMOLClassifier, build_model, describe
from mamol_core.patches import PatchSampler
from mamol_core.protocol import describe_protocol
from mamol_core.samples import PreparedScene, prepare_scene
from mamol_core.scene import Scene
from mamol_core.train import train_model

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What a training run produced."""

    model: MaMOLClassifier
    config: MamolConfig
    prepared: PreparedScene
    sampler: PatchSampler
    history: list[float]
    seconds: float


def train_on_scene(scene: Scene, backbone: BackboneSpec, experts: ExpertSpec, layout: LayoutSpec, protocol: ProtocolSpec,
                   train: TrainSpec, device: torch.device, amp_dtype: torch.dtype | None, progress_mode: str = "bar") -> TrainingRun:
    """Fit normalisation, build the model and train it on the scene's training pixels."""
    layout.check()
    patch_size = layout.patch_size
    if len(scene.modalities) == 1 and protocol.missing_rate > 0:
        protocol = replace(protocol, missing_rate=0.0)
    log.info("protocol: %s", describe_protocol(scene.names, protocol.missing_rate, protocol.missing))
    prepared, specs = prepare_scene(scene, protocol, margin=patch_size)
    resolved, frozen = resolve_backbone(backbone)
    model_config = ModelConfig(specs, scene.classes, resolved, experts, layout, scene.grid.spec())
    config = MamolConfig(model_config, protocol, train)
    torch.manual_seed(train.seed)
    model = build_model(model_config, frozen).to(device)
    log.info("backbone %s; %s", resolved.name, describe(model))
    log.info("training on %d pixels (%s), %d classes, device %s, %s", len(prepared.train), ", ".join(scene.names),
             len(scene.classes), device, amp_dtype or "float32")
    sampler = PatchSampler(torch.from_numpy(prepared.data).to(device), patch_size, training_label_map(prepared, device))
    start = time.perf_counter()
    history = train_model(model, sampler, prepared.train, train, amp_dtype, progress_mode)
    return TrainingRun(model, config, prepared, sampler, history, time.perf_counter() - start)


def training_label_map(prepared: PreparedScene, device: torch.device) -> torch.Tensor:
    """The training pixels as a label map over the window: class index + 1, 0 = not a training pixel."""
    labels = torch.zeros(prepared.data.shape[1:], dtype=torch.uint8)
    pixels = prepared.train
    labels[torch.as_tensor(pixels.rows), torch.as_tensor(pixels.cols)] = torch.as_tensor(pixels.targets + 1, dtype=torch.uint8)
    return labels.to(device)


def evaluate_run(run: TrainingRun, amp_dtype: torch.dtype | None, batch_size: int = 256, progress_mode: str = "bar",
                 max_pixels: int | None = None) -> Evaluation:
    """Evaluate a fresh training run on its scene's test pixels: all of them, or a seeded random
    ``max_pixels`` of them."""
    if run.prepared.test is None:
        raise MamolError("the scene has no test labels to evaluate on; add test_labels.tif or pass --test-labels")
    pixels = run.prepared.test if max_pixels is None else run.prepared.test.sample(max_pixels, run.config.train.seed)
    predicted = predict_pixels(run.model, run.sampler, pixels, batch_size, amp_dtype, progress_mode)
    return evaluate_predictions(pixels, predicted, [c.name for c in run.config.model.classes], run.config.model.modality_names)


def order_scene_for_model(scene: Scene, config: MamolConfig, source: str) -> Scene:
    """The scene's modalities in the model's order; stop on a missing modality or wrong band count."""
    by_name = {m.name: m for m in scene.modalities}
    ordered = []
    for spec in config.model.modalities:
        raster = by_name.get(spec.name)
        if raster is None:
            raise MamolError(f"{source}: the scene has no modality {spec.name!r} that the model expects; add {spec.name}.tif or --input {spec.name}=PATH")
        if raster.bands != spec.bands:
            raise MamolError(f"{raster.path}: {raster.bands} bands, but the model's {spec.name} has {spec.bands}; pass the raster the model was trained with")
        ordered.append(raster)
    return replace(scene, modalities=ordered)


def predict_test_pixels(model: MaMOLClassifier, prepared: PreparedScene, mode: str, stride: int | None,
                        amp_dtype: torch.dtype | None, batch_size: int, progress_mode: str, device: torch.device):
    """Predictions for the test pixels: ``pixel`` (a patch centred on each) or ``dense`` (blended tiles)."""
    if mode == "pixel":
        sampler = PatchSampler(torch.from_numpy(prepared.data).to(device), model.config.layout.patch_size)
        return predict_pixels(model, sampler, prepared.test, batch_size, amp_dtype, progress_mode)
    if mode == "dense":
        return predict_pixels_dense(model, torch.from_numpy(prepared.data).to(device), torch.from_numpy(prepared.valid).to(device),
                                    prepared.test, stride or default_stride(model.config.layout), batch_size, amp_dtype,
                                    progress_mode)
    raise MamolError(f"--mode {mode}: use pixel or dense")


def evaluate_model_on_scene(model: MaMOLClassifier, config: MamolConfig, scene: Scene, protocol: ProtocolSpec,
                            device: torch.device, amp_dtype: torch.dtype | None, batch_size: int = 256,
                            progress_mode: str = "bar", mode: str = "pixel", stride: int | None = None) -> Evaluation:
    """Evaluate a saved model on a scene's test labels with the model's own normalisation."""
    scene = order_scene_for_model(scene, config, "the scene")
    if scene.test_labels is None or not (scene.test_labels > 0).any():
        raise MamolError("the scene has no test labels to evaluate on; add test_labels.tif or pass --labels")
    prepared, _ = prepare_scene(scene, protocol, margin=config.model.layout.patch_size, specs=config.model.modalities)
    predicted = predict_test_pixels(model, prepared, mode, stride, amp_dtype, batch_size, progress_mode, device)
    return evaluate_predictions(prepared.test, predicted, [c.name for c in config.model.classes], config.model.modality_names)
