"""Shared fixtures: a small synthetic scene and tiny model configurations (CPU, seconds)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mamol_core.config import BackboneSpec, ClassSpec, ExpertSpec, LayoutSpec, ModalitySpec, ModelConfig
from mamol_core.data.synthetic import write_scene

TRENTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "trento"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory) -> Path:
    """A 40x40 synthetic two-sensor scene (8-band cube + DSM) with raster and vector labels."""
    folder = tmp_path_factory.mktemp("scene")
    write_scene(folder, 40, 40, bands=8, fields=18, per_field=10, seed=3, vector=True)
    return folder


def tiny_config(modalities=(("a", 3), ("b", 2)), classes: int = 4, patch: int = 6, token: int = 2, encoding: str = "separate",
                **experts) -> ModelConfig:
    """A model config on the tiny backbone with unit normalisation (6 x 6 patches of 2 x 2-pixel tokens by default)."""
    return ModelConfig(
        modalities=[ModalitySpec(n, b, [0.0] * b, [1.0] * b) for n, b in modalities],
        classes=[ClassSpec(i + 1, f"class {i + 1}", "#000000") for i in range(classes)],
        backbone=BackboneSpec("tiny"),
        experts=ExpertSpec(**{"num_layers": 2, "rank": 4, **experts}),
        layout=LayoutSpec(patch, token, 16, encoding),
    )


#: mamol-train options for a model in seconds (tiny backbone, 6-pixel tiles, 3 epochs).
CLI_FAST = ["--backbone", "tiny", "--patch-size", "6", "--token-size", "2", "--epochs", "3", "--min-steps", "0", "--expert-layers", "2",
            "--rank", "4", "--device", "cpu", "--progress", "none", "--quiet"]


def copy_with_config(source: Path, target: Path, edit: Callable[[dict], dict]) -> None:
    """Copy the model file ``source`` to ``target`` with its embedded config (as a dict) passed through ``edit``."""
    from safetensors.torch import load_file, save_file

    from mamol_core.modelfile.header import CONFIG_KEY, read_metadata

    config = edit(json.loads(read_metadata(source)[CONFIG_KEY]))
    save_file(load_file(str(source)), str(target), metadata={CONFIG_KEY: json.dumps(config), "format": "mamol"})


def edit_state(state: Path, edit: Callable[[dict], None]) -> None:
    """Rewrite a training state file's JSON in place through ``edit`` (as another mamol would have written it)."""
    from safetensors.torch import load_file, save_file

    from mamol_core.modelfile.header import read_metadata
    from mamol_core.training.state import STATE_KEY

    meta = json.loads(read_metadata(state)[STATE_KEY])
    edit(meta)
    save_file(load_file(str(state)), str(state), metadata={STATE_KEY: json.dumps(meta), "format": "mamol-training-state"})


@pytest.fixture(scope="session")
def model_file(scene_dir, tmp_path_factory) -> Path:
    """A model trained by mamol-train on the synthetic scene (missing rate 0.5); read-only for tests."""
    from click.testing import CliRunner

    from mamol_cli import train

    out = tmp_path_factory.mktemp("cli") / "model.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--missing-rate", "0.5", "-o", str(out), *CLI_FAST])
    assert result.exit_code == 0, result.output
    return out
