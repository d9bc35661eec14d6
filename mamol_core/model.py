"""MaMOLClassifier: per-modality tokenizers, a frozen backbone with expert layers, a per-pixel head."""

from __future__ import annotations

import torch
from torch import nn

from mamol_core.backbones import build_backbone
from mamol_core.backbones.base import FrozenBackbone
from mamol_core.config import ModelConfig
from mamol_core.experts import attach_experts
from mamol_core.experts.context import RoutingContext


class ModalityTokenizer(nn.Module):
    """One token per pixel: Conv3x3 (bands -> hidden), GELU, Conv1x1 (hidden -> backbone width).

    This is the authors' tokenizer (CLIP's own patch embedding is skipped); each token sees the
    3x3 neighbourhood of its pixel.
    """

    def __init__(self, bands: int, hidden: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(bands, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, bands, P, P]`` -> ``[B, P*P, width]``."""
        return self.net(x).flatten(2).transpose(1, 2)


def sincos_2d(size: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code ``[size*size, width]`` used to initialise positions."""
    quarter = width // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    grid = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")
    parts = [f(axis.reshape(-1, 1) * freq) for axis in (rows, cols) for f in (torch.sin, torch.cos)]
    code = torch.cat(parts, dim=1)
    return nn.functional.pad(code, (0, width - code.shape[1]))


class MaMOLClassifier(nn.Module):
    """Classifies every pixel of a ``P x P`` patch from all modalities at once.

    Missing modalities: the tokens of an absent modality are replaced by zeros *after* its
    tokenizer (the paper's "encoder outputs replaced with zero-filled tensors"), so the input can
    hold anything there. Position and modality-type embeddings are still added, which keeps the
    sequence layout fixed and makes the dummy token a learned constant per position (eq. 3). The
    presence mask also reaches every expert layer, and the features of absent modalities are
    zeroed before the head, as in the authors' code.

    All modalities share one token sequence (``M * P * P`` tokens), so attention fuses them. The
    head reads, for each pixel, the concatenated per-modality features of that pixel's tokens.
    """

    def __init__(self, config: ModelConfig, backbone: FrozenBackbone) -> None:
        super().__init__()
        self.config = config
        width, size, count = backbone.width, config.patch_size, len(config.modalities)
        self.band_slices = []
        start = 0
        for modality in config.modalities:
            self.band_slices.append(slice(start, start + modality.bands))
            start += modality.bands
        self.tokenizers = nn.ModuleList(ModalityTokenizer(m.bands, config.tokenizer_hidden, width) for m in config.modalities)
        self.position = nn.Parameter(sincos_2d(size, width))
        self.modality_type = nn.Parameter(torch.randn(count, width) * 0.02)
        self.backbone = backbone
        self.routing = RoutingContext()
        self.expert_layers, self.prompt_tokens = attach_experts(backbone, count, config.experts, self.routing)
        self.head = nn.Sequential(nn.LayerNorm(count * width), nn.Linear(count * width, len(config.classes)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, total_bands, P, P]`` normalised bands; ``mask``: ``[B, M]`` presence (bool).

        Returns per-pixel class logits ``[B, classes, P, P]``.
        """
        batch, _, size, _ = x.shape
        if size != self.config.patch_size:
            raise ValueError(f"patch size {size} differs from the model's {self.config.patch_size}")
        present = mask.to(x.dtype)
        tokens = [
            tok(x[:, bands]) * present[:, i, None, None] + self.position + self.modality_type[i]
            for i, (tok, bands) in enumerate(zip(self.tokenizers, self.band_slices))
        ]
        self.routing.mask = mask
        try:
            features = self.backbone(torch.cat(tokens, dim=1))
        finally:
            self.routing.end_pass()
        count = len(self.tokenizers)
        features = features[:, self.prompt_tokens :].unflatten(1, (count, size * size)) * present[:, :, None, None].to(features.dtype)
        features = features.permute(0, 2, 1, 3).flatten(2)
        logits = self.head(features)
        return logits.transpose(1, 2).unflatten(2, (size, size))

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(config: ModelConfig, backbone: FrozenBackbone | None = None) -> MaMOLClassifier:
    """The one factory: a classifier for ``config``, building its backbone unless one is given."""
    return MaMOLClassifier(config, backbone if backbone is not None else build_backbone(config.backbone))


def describe(model: MaMOLClassifier) -> str:
    """One line with the trainable and total parameter counts."""
    trainable, total = model.trainable_parameters(), model.total_parameters()
    return f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%), experts in blocks {model.expert_layers}"

