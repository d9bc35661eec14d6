"""The visual tower of an open_clip ViT (CLIP ViT-B/16 by default) as a frozen backbone.

Weights come from a local file (``--backbone-weights``), from open_clip's cache, or from a download
when the hub can be reached. A machine without internet fails fast instead of waiting on a download.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import torch

from mamol_core.backbones.base import FrozenBackbone
from mamol_core.errors import MamolError

log = logging.getLogger(__name__)

HUB_HOST = ("huggingface.co", 443)


class BackboneUnavailable(MamolError):
    """Pretrained weights are neither on disk nor downloadable from here: ``reason`` says which, the
    message adds what to do."""

    def __init__(self, reason: str, advice: str) -> None:
        super().__init__(f"{reason}; {advice}")
        self.reason, self.advice = reason, advice

    def __reduce__(self):
        return type(self), (self.reason, self.advice)


class OpenClipVisual(FrozenBackbone):
    """The parts of an open_clip ``VisionTransformer`` that see our tokens: ln_pre, the residual
    blocks (whose ``.mlp`` expert layers wrap) and ln_post. The patch embedding, class token and
    projection are dropped, so every weight has exactly one name in a state dict."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.width = visual.transformer.width
        self.ln_pre = visual.ln_pre
        self.blocks = visual.transformer.resblocks
        self.ln_post = visual.ln_post

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(tokens)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the open_clip weight hub answers within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def cached_weights(model: str, tag: str) -> str | None:
    """Path of the open_clip weights for ``model``/``tag`` if they are already in the local cache."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        raise MamolError(f"open_clip knows no weights {model!r} with tag {tag!r}; see open_clip.list_pretrained()")
    if "file" in cfg:
        return cfg["file"]
    repo, filename = os.path.split(cfg.get("hf_hub", ""))
    for name in ("open_clip_model.safetensors", filename or "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, name) if repo else None
        if isinstance(found, str):
            return found
    return None


def build_openclip(model: str, tag: str | None, weights: str | None, quick_gelu: bool) -> OpenClipVisual:
    """Build a frozen open_clip visual tower from ``weights`` (a local file), the cache, or the hub.
    Without a tag or weights the tower keeps open_clip's random initialisation (seeded here), and
    its weights then travel inside the mamol model file."""
    import open_clip

    if weights:
        if not Path(weights).is_file():
            raise MamolError(f"{weights}: no such backbone weights file; pass the path of a saved open_clip checkpoint")
        source = weights
    elif tag:
        source = cached_weights(model, tag)
        if source is None:
            if not hub_reachable():
                raise BackboneUnavailable(f"CLIP weights {model}/{tag} are not on disk and the hub cannot be reached",
                                          "pass --backbone-weights PATH (a local open_clip checkpoint), or --backbone auto for the offline backbone")
            source = tag
            log.info("downloading %s/%s through open_clip", model, tag)
    else:
        source = None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            clip = open_clip.create_model(model, pretrained=source, force_quick_gelu=quick_gelu, require_pretrained=source is not None)
    except Exception as exc:  # open_clip signals a mismatched checkpoint with several exception types
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise MamolError(f"{weights or model}: open_clip could not load these weights ({reason}); check --backbone and --backbone-weights") from None
    backbone = OpenClipVisual(clip.visual).freeze()
    backbone.ships_weights = source is None
    return backbone
