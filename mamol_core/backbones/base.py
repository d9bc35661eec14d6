"""The frozen-backbone interface and a plain transformer block shared by the non-CLIP backbones."""

from __future__ import annotations

import torch
from torch import nn


class FrozenBackbone(nn.Module):
    """A frozen transformer that maps a token sequence ``[B, N, width]`` to features of the same shape.

    Subclasses set ``width`` and ``blocks`` (each block exposes its feed-forward network as ``.mlp``,
    a module ``z -> ffn(z)`` that expert layers wrap) and implement ``forward``.
    ``ships_weights`` is True when the weights have no outside source (random or trained here) and
    must therefore be stored inside the mamol model file.
    """

    width: int
    blocks: nn.ModuleList
    ships_weights: bool = False

    def keep_first(self, depth: int) -> "FrozenBackbone":
        """Drop every block after the first ``depth``: a shallower, cheaper backbone (``NAME@DEPTH``)."""
        del self.blocks[depth:]
        return self

    def freeze(self) -> "FrozenBackbone":
        """Stop gradients into every weight the backbone owns and keep it in eval mode."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # The frozen part never switches to training behaviour; expert modules inside it carry no dropout.
        return super().train(False)


class EncoderBlock(nn.Module):
    """A transformer encoder block, pre-norm (ViT style) or post-norm (BERT style)."""

    def __init__(self, width: int, heads: int, hidden: int, norm_first: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self._attention(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self._attention(x))
        return self.ln_2(x + self.mlp(x))


class EncoderStack(FrozenBackbone):
    """A stack of :class:`EncoderBlock` with an input and an output LayerNorm."""

    def __init__(self, width: int, depth: int, heads: int, hidden: int, norm_first: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.width = width
        self.ln_in = nn.LayerNorm(width, eps=eps)
        self.blocks = nn.ModuleList(EncoderBlock(width, heads, hidden, norm_first, eps) for _ in range(depth))
        self.ln_out = nn.LayerNorm(width, eps=eps) if norm_first else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln_in(tokens)
        for block in self.blocks:
            x = block(x)
        return self.ln_out(x)
