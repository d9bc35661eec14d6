"""MaMOLClassifier: per-modality tokenizers of s x s-pixel tokens, a frozen backbone with expert layers
that sees only the present modalities' tokens, and a head that predicts every pixel of every token."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mamol_core.backbones import build_backbone
from mamol_core.backbones.base import FrozenBackbone
from mamol_core.config import ModelConfig
from mamol_core.experts import attach_experts
from mamol_core.experts.context import RoutingContext


class ModalityTokenizer(nn.Module):
    """One token per ``s x s`` pixels: Conv3x3 (bands -> hidden) on every pixel, GELU, then a
    ``s x s`` convolution with stride ``s`` (hidden -> backbone width) that merges each block.

    With ``s = 1`` this is the authors' tokenizer (Conv3x3 then Conv1x1; CLIP's own patch
    embedding is skipped). Every pixel is read: a token sees its ``s x s`` block and a one-pixel rim.
    """

    def __init__(self, bands: int, hidden: int, width: int, token_size: int) -> None:
        super().__init__()
        self.pixels = nn.Sequential(nn.Conv2d(bands, hidden, 3, padding=1), nn.GELU())
        self.merge = nn.Conv2d(hidden, width, token_size, stride=token_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, bands, P, P]`` -> ``[B, (P/s)**2, width]``."""
        return self.merge(self.pixels(x)).flatten(2).transpose(1, 2)


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
    """Classifies every pixel of a ``P x P`` patch from whichever modalities are present.

    Each modality is tokenized on its own (``s x s`` pixels per token) and given a learned
    position and modality-type embedding. How the tokens meet the frozen backbone is the layout's
    ``encoding``: ``separate`` (the default) makes every present (sample, modality) its own
    sequence (the paper's eq. 4), all in one backbone call; ``joint`` puts the tokens of a sample's
    present modalities in one sequence, so they attend to each other, with one call per number of
    present modalities in the batch. Either way an absent modality is not computed at all: its
    features are zeros. Every sequence carries its sample's whole presence mask to the expert
    layers (``alpha_i = m_i`` for the modality experts, ``psi(m)`` in the router).

    The head fuses per token: the concatenated features of the token's modalities (zeros for
    absent ones) go through LayerNorm and one linear map to ``classes x s x s`` logits, which a
    pixel shuffle puts back on the ``P x P`` pixel grid.
    """

    def __init__(self, config: ModelConfig, backbone: FrozenBackbone) -> None:
        super().__init__()
        config.layout.check()
        self.config = config
        layout, width, count = config.layout, backbone.width, len(config.modalities)
        self.band_slices = config.band_slices
        self.tokens_per_modality = layout.tokens_per_side**2
        self.tokenizers = nn.ModuleList(ModalityTokenizer(m.bands, layout.hidden, width, layout.token_size) for m in config.modalities)
        self.position = nn.Parameter(sincos_2d(layout.tokens_per_side, width))
        self.modality_type = nn.Parameter(torch.randn(count, width) * 0.02)
        self.backbone = backbone
        self.routing = RoutingContext()
        self.expert_layers, self.prompt_tokens = attach_experts(backbone, count, config.experts, self.routing)
        self.head = nn.Sequential(nn.LayerNorm(count * width), nn.Linear(count * width, len(config.classes) * layout.token_size**2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, total_bands, P, P]`` normalised bands; ``mask``: ``[B, M]`` presence (bool).

        Returns per-pixel class logits ``[B, classes, P, P]``.
        """
        size = self.config.layout.patch_size
        if x.shape[-1] != size or x.shape[-2] != size:
            raise ValueError(f"patch size {tuple(x.shape[-2:])} differs from the model's {size}")
        return self.decode(self.encode(x, mask.bool()))

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Features ``[B, M, T, width]`` of the present (sample, modality) pairs; zeros for absent ones."""
        if not mask.any():
            return x.new_zeros(len(x), len(self.tokenizers), self.tokens_per_modality, self.backbone.width)
        samples, modalities, tokens = self._embed_present(x, mask)
        if self.config.layout.encoding == "joint":
            return self._encode_joint(samples, modalities, tokens, mask)
        encoded = self._run_backbone(tokens, mask[samples])
        return self._scatter(encoded, samples, modalities, len(x))

    def _embed_present(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample indices, modality indices and tokens ``[pairs, T, width]`` (with position and
        modality-type embeddings) of every present (sample, modality) pair; absent ones are not tokenized."""
        samples, modalities, tokens = [], [], []
        for index, (tokenizer, bands) in enumerate(zip(self.tokenizers, self.band_slices)):
            present = mask[:, index].nonzero().squeeze(1)
            if len(present):
                samples.append(present)
                modalities.append(torch.full_like(present, index))
                tokens.append(tokenizer(x[present, bands]) + self.position + self.modality_type[index])
        return torch.cat(samples), torch.cat(modalities), torch.cat(tokens)

    def _scatter(self, values: torch.Tensor, samples: torch.Tensor, modalities: torch.Tensor, batch: int) -> torch.Tensor:
        """``[pairs, T, width]`` placed at their (sample, modality) in ``[batch, M, T, width]`` zeros."""
        out = values.new_zeros(batch, len(self.tokenizers), *values.shape[1:])
        out[samples, modalities] = values
        return out

    def _run_backbone(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One backbone call with ``mask`` (one row per sequence) handed to the expert layers."""
        self.routing.mask = mask
        try:
            return self.backbone(tokens)[:, self.prompt_tokens :]
        finally:
            self.routing.end_pass()

    def _encode_joint(self, samples: torch.Tensor, modalities: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One sequence per sample holding the tokens of its present modalities only (in modality
        order), so tokens of different sensors attend to each other; one backbone call per sequence
        length, i.e. per number of present modalities."""
        embedded = self._scatter(tokens, samples, modalities, len(mask))
        present_first = mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)
        sizes = mask.sum(1)
        features = None
        for size in sizes.unique().tolist():
            if size == 0:
                continue
            members = (sizes == size).nonzero()
            which = present_first[members.squeeze(1), :size]
            sequence = embedded[members, which].flatten(1, 2)
            encoded = self._run_backbone(sequence, mask[members.squeeze(1)]).unflatten(1, (size, self.tokens_per_modality))
            if features is None:
                features = encoded.new_zeros(len(mask), *embedded.shape[1:3], encoded.shape[-1])
            features[members, which] = encoded
        return features

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, M, T, width]`` -> logits ``[B, classes, P, P]`` (pixel shuffle of ``s x s`` per token)."""
        layout = self.config.layout
        side = layout.tokens_per_side
        logits = self.head(features.permute(0, 2, 1, 3).flatten(2))
        logits = logits.transpose(1, 2).unflatten(2, (side, side))
        return F.pixel_shuffle(logits, layout.token_size)

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
