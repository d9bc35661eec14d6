"""Saving and loading models: one safetensors file holding the trained weights and, in its
metadata, the JSON config (:class:`MamolConfig`). Loading never unpickles."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mamol_core.atomic import atomic_path
from mamol_core.config import MamolConfig
from mamol_core.errors import MamolError
from mamol_core.model import MaMOLClassifier, build_model
from mamol_core.modelfile.header import CONFIG_KEY, read_config

def frozen_keys(model: MaMOLClassifier) -> set[str]:
    """State-dict keys of the frozen backbone weights that come from the backbone's own source."""
    if model.backbone.ships_weights:
        return set()
    return {f"backbone.{name}" for name, p in model.backbone.named_parameters() if not p.requires_grad}


def save_model(model: MaMOLClassifier, config: MamolConfig, path: Path) -> None:
    """Write trained weights and config to ``path`` atomically."""
    skip = frozen_keys(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in skip}
    with atomic_path(Path(path)) as temporary:
        save_file(tensors, str(temporary), metadata={CONFIG_KEY: config.to_json(), "format": "mamol"})


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[MaMOLClassifier, MamolConfig]:
    """Rebuild the model a file describes and load its weights (safetensors, no pickle)."""
    config = read_config(path)
    try:
        model = build_model(config.model)
    except MamolError as exc:  # its backbone cannot be built here (not installed, or fewer blocks than the file names)
        raise MamolError(f"{path}: {exc}") from None
    unfit = f"{path}: its weights do not fit the network its config describes"
    try:
        state = load_file(str(path))
    except SafetensorError as exc:
        raise MamolError(f"{path}: its weights cannot be read ({exc}); copy the model file again or retrain") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError:
        raise MamolError(f"{unfit} (tensor shapes differ: was its config edited?); use the file mamol-train wrote, or retrain") from None
    missing = set(result.missing_keys) - frozen_keys(model)
    if missing or result.unexpected_keys:
        raise MamolError(f"{unfit} ({len(missing)} missing, {len(result.unexpected_keys)} unexpected); retrain it with this mamol version")
    return model.to(device).eval(), config
