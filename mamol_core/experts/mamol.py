"""The Missing-aware Mixture-of-LoRAs layer (paper section 4)."""

from __future__ import annotations

import torch
from torch import nn

from mamol_core.config import ExpertSpec
from mamol_core.experts.context import RoutingContext
from mamol_core.experts.lora import LoRABank


def pattern_index(mask: torch.Tensor) -> torch.Tensor:
    """Integer code of each presence pattern: bit ``i`` set when modality ``i`` is present."""
    weights = 2 ** torch.arange(mask.shape[-1], device=mask.device)
    return (mask.long() * weights).sum(-1)


class TopKRouter(nn.Module):
    """Token router ``TopK(softmax(W phi(z)))``: ``phi`` is a one-layer projection with GELU and
    ``W`` the routing matrix. The kept gates are the softmax values of the top-k experts (not
    renormalised); the others are 0. This is the input-only router of adapter-based MoE."""

    def __init__(self, width: int, num_experts: int, top_k: int, hidden: int, extra: int = 0) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must lie between 1 and the number of routed experts ({num_experts})")
        self.top_k = top_k
        self.phi = nn.Sequential(nn.Linear(width + extra, hidden), nn.GELU())
        self.W = nn.Linear(hidden, num_experts)

    def route(self, features: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.W(self.phi(features)).float(), dim=-1)
        top = probs.topk(self.top_k, dim=-1)
        return torch.zeros_like(probs).scatter(-1, top.indices, top.values)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.route(z)


class PatternRouter(TopKRouter):
    """Router of eq. 15: ``TopK(softmax(W phi([z; psi(m)])))``, where ``psi`` embeds the missing
    pattern (one vector per presence pattern, i.e. a linear map of its one-hot code)."""

    def __init__(self, width: int, num_modalities: int, num_experts: int, top_k: int, embed_dim: int, hidden: int) -> None:
        super().__init__(width, num_experts, top_k, hidden, extra=embed_dim)
        self.psi = nn.Embedding(2**num_modalities, embed_dim)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        task = self.psi(pattern_index(mask)).to(z.dtype)
        return self.route(torch.cat([z, task[:, None, :].expand(-1, z.shape[1], -1)], dim=-1))


class MaMOLAdapter(nn.Module):
    """Residual ``h_dyn + h_stat`` added to a frozen FFN's output (eqs. 12, 14, 17).

    Experts, in bank order: one shared expert (coefficient 1), one expert per modality (coefficient
    ``m_i``, the presence bit: an absent modality's expert adds exactly zero) and ``num_dynamic``
    dynamic experts weighted by :class:`PatternRouter`. ``shared``/``modality``/``num_dynamic=0``
    switch parts off for the paper's ablations.
    """

    def __init__(self, width: int, num_modalities: int, spec: ExpertSpec) -> None:
        super().__init__()
        self.num_shared = int(spec.shared)
        self.num_modality = num_modalities if spec.modality else 0
        self.num_dynamic = spec.num_dynamic
        total = self.num_shared + self.num_modality + self.num_dynamic
        if total == 0:
            raise ValueError("a MaMOL layer needs at least one expert")
        self.bank = LoRABank(total, width, spec.rank, spec.alpha)
        self.router = (
            PatternRouter(width, num_modalities, spec.num_dynamic, spec.top_k, spec.pattern_embed_dim, spec.router_hidden)
            if spec.num_dynamic
            else None
        )

    def coefficients(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token expert coefficients ``[B, N, experts]`` in bank order."""
        batch, tokens = z.shape[:2]
        parts = []
        if self.num_shared:
            parts.append(z.new_ones(batch, tokens, 1, dtype=torch.float32))
        if self.num_modality:
            parts.append(mask.float()[:, None, :].expand(-1, tokens, -1))
        if self.router is not None:
            parts.append(self.router(z, mask))
        return torch.cat(parts, dim=-1)

    def forward(self, z: torch.Tensor, context: RoutingContext, layer: int) -> torch.Tensor:
        coeff = self.coefficients(z, context.require_mask())
        if self.router is not None:
            context.keep_gates(layer, coeff[..., -self.num_dynamic :])
        return self.bank(z, coeff)
