"""Scoring a model on a scene's test labels: a fresh training run's, or a saved model's."""

from __future__ import annotations

from dataclasses import replace

import torch

from mamol_core.config import MamolConfig, ProtocolSpec
from mamol_core.data.patches import PatchSampler
from mamol_core.data.pixels import PreparedScene, prepare_scene
from mamol_core.data.scene import Scene
from mamol_core.data.sources import check_sources
from mamol_core.errors import MamolError
from mamol_core.evaluation.predict import Evaluation, evaluate_predictions, predict_pixels, predict_pixels_dense
from mamol_core.mapping.dense import default_stride
from mamol_core.model import MaMOLClassifier
from mamol_core.training.fit import TrainingRun


def evaluate_run(run: TrainingRun, amp_dtype: torch.dtype | None, batch_size: int = 256, progress_mode: str = "bar",
                 max_pixels: int | None = None) -> Evaluation:
    """Evaluate a fresh training run on its scene's test pixels: all of them, or a seeded random
    ``max_pixels`` of them."""
    if run.prepared.test is None:
        raise MamolError("the scene has no test labels to evaluate on; add test_labels.tif or pass --test-labels")
    pixels = run.prepared.test if max_pixels is None else run.prepared.test.sample(max_pixels, run.config.train.seed)
    predicted = predict_pixels(run.model, run.sampler, pixels, batch_size, amp_dtype, progress_mode)
    return evaluate_predictions(pixels, predicted, [c.name for c in run.config.model.classes], run.config.model.modality_names)


def order_scene_for_model(scene: Scene, config: MamolConfig, source: str, complete: bool = True) -> Scene:
    """The scene's modalities in the model's order, after :func:`check_sources`; with ``complete`` every
    modality of the model is needed, else those not given are absent on every pixel."""
    check_sources(config.model, {m.name: m.path for m in scene.modalities}, complete=complete, where=source)
    by_name = {m.name: m for m in scene.modalities}
    return replace(scene, modalities=[by_name[spec.name] for spec in config.model.modalities if spec.name in by_name])


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
    """Evaluate a saved model on a scene's test labels with the model's own normalisation; ``scene`` holds
    the model's modalities in its order (:func:`order_scene_for_model`), and one it lacks is absent on
    every test pixel."""
    if scene.test_labels is None or not (scene.test_labels > 0).any():
        raise MamolError("the scene has no test labels to evaluate on; add test_labels.tif or pass --labels")
    prepared, _ = prepare_scene(scene, protocol, margin=config.model.layout.patch_size, specs=config.model.modalities, require_test=True)
    predicted = predict_test_pixels(model, prepared, mode, stride, amp_dtype, batch_size, progress_mode, device)
    return evaluate_predictions(prepared.test, predicted, [c.name for c in config.model.classes], config.model.modality_names)
