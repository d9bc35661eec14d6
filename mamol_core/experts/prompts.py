"""Prompt baselines on the frozen backbone: MMP (Lee et al. 2023) and DCP (Hu et al. 2024).

Both choose their prompts by the sample's presence pattern and prepend them to the sequence at each
prompted block. MMP's prompts accumulate, as in the authors' input-level prompting: each prompted
block prepends its own set in front of the earlier blocks' (outputs), so after ``L`` prompted
blocks ``L x length`` prompt tokens lead the sequence. DCP's replace the previous block's (deep
prompts). The classifier drops them after the backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from mamol_core.experts.context import RoutingContext
from mamol_core.experts.mamol import pattern_index


class PromptedBlock(nn.Module):
    """Runs ``block`` on ``[prompts; x]`` after dropping the ``replaced`` leading tokens of ``x``
    (the previous block's prompts; 0 keeps them, so prompts accumulate). ``prompts`` sees the
    sequence without its prompt tokens; ``carried`` of them lead ``x``."""

    def __init__(self, block: nn.Module, prompts: nn.Module, replaced: int, carried: int) -> None:
        super().__init__()
        self.block, self.prompts, self.replaced, self.carried = block, prompts, replaced, carried

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prompts = self.prompts(x[:, self.carried :]).to(x.dtype)
        return self.block(torch.cat([prompts, x[:, self.replaced :]], dim=1))


class MissingAwarePrompts(nn.Module):
    """MMP: one learnable prompt set per presence pattern for this block."""

    def __init__(self, width: int, num_modalities: int, length: int, context: RoutingContext) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(2**num_modalities, length, width) * 0.02)
        self._context = context

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[pattern_index(self._context.require_mask())]


class CorrelatedChain(nn.Module):
    """DCP's correlated prompts: block 0 learns one set per pattern; each later block projects the
    previous block's prompts (handed on through the routing context during a forward pass)."""

    def __init__(self, width: int, num_modalities: int, length: int, depth: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.randn(2**num_modalities, length, width) * 0.02)
        self.projections = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))

    def at(self, step: int, context: RoutingContext) -> torch.Tensor:
        mask = context.require_mask()
        context.carried = self.start[pattern_index(mask)] if step == 0 else self.projections[step - 1](context.carried)
        return context.carried


class DeepCorrelatedPrompts(nn.Module):
    """DCP for one block: correlated prompts, dynamic prompts (per-pattern queries attending over the
    block's input tokens) and modal-common prompts shared by all patterns, a third of the length each."""

    def __init__(self, width: int, num_modalities: int, length: int, step: int, chain: CorrelatedChain, context: RoutingContext) -> None:
        super().__init__()
        third = length // 3
        self.step, self._chain, self._context = step, [chain], context
        self.queries = nn.Parameter(torch.randn(2**num_modalities, third, width) * 0.02)
        self.common = nn.Parameter(torch.randn(length - 2 * third, width) * 0.02)
        self.scale = width**-0.5

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = self._context.require_mask()
        correlated = self._chain[0].at(self.step, self._context)
        queries = self.queries[pattern_index(mask)].to(tokens.dtype)
        attention = torch.softmax((queries @ tokens.transpose(1, 2)).float() * self.scale, dim=-1).to(tokens.dtype)
        dynamic = attention @ tokens
        common = self.common[None].expand(len(tokens), -1, -1)
        return torch.cat([correlated.to(tokens.dtype), dynamic, common.to(tokens.dtype)], dim=1)
