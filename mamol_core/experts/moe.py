"""The paper's MoE baselines (section 3.2): adapter-based and task-driven LoRA pools, replace-based FFN experts."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mamol_core.config import ExpertSpec
from mamol_core.experts.context import RoutingContext
from mamol_core.experts.lora import LoRABank
from mamol_core.experts.mamol import PatternRouter, TopKRouter


class RoutedLoRAPool(nn.Module):
    """One pool of ``num_dynamic`` LoRA experts added to the frozen FFN (eq. 8), weighted by ``router``."""

    def __init__(self, width: int, spec: ExpertSpec, router: nn.Module) -> None:
        super().__init__()
        self.bank = LoRABank(spec.num_dynamic, width, spec.rank, spec.alpha)
        self.router = router

    def forward(self, z: torch.Tensor, context: RoutingContext, layer: int) -> torch.Tensor:
        gates = self.router(z, context.require_mask())
        context.keep_gates(layer, gates)
        return self.bank(z, gates)


def adapter_moe(width: int, num_modalities: int, spec: ExpertSpec) -> RoutedLoRAPool:
    """MoE_ada: the router sees the token features only (MoE-LoRA)."""
    return RoutedLoRAPool(width, spec, TopKRouter(width, spec.num_dynamic, spec.top_k, spec.router_hidden))


def task_moe(width: int, num_modalities: int, spec: ExpertSpec) -> RoutedLoRAPool:
    """MoE_task: the router sees ``[z; psi(m)]`` (eq. 9), but there is one pool with no shared or modality experts."""
    return RoutedLoRAPool(width, spec, PatternRouter(width, num_modalities, spec.num_dynamic, spec.top_k,
                                                     spec.pattern_embed_dim, spec.router_hidden))


class SwitchFFN(nn.Module):
    """MoE_rep (eq. 7): the frozen FFN is replaced by ``num_dynamic`` trainable full FFN experts,
    each initialised as a copy of it, and a top-k router on the token features.

    Each token's output is ``sum_k (g_k / sg(g_k)) F_k(z)`` over its top-k experts divided by k:
    the value equals the mean of the chosen experts' outputs (so training starts exactly at the
    frozen network), while the router still receives gradients through ``g_k`` (``sg`` stops them).
    """

    def __init__(self, base: nn.Module, width: int, spec: ExpertSpec, context: RoutingContext, layer: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(copy.deepcopy(base) for _ in range(spec.num_dynamic))
        for parameter in self.experts.parameters():
            parameter.requires_grad_(True)
        self.router = TopKRouter(width, spec.num_dynamic, spec.top_k, spec.router_hidden)
        self.top_k, self.layer = spec.top_k, layer
        self._context = context

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        gates = self.router(z, self._context.require_mask())
        self._context.keep_gates(self.layer, gates)
        chosen = gates > 0
        scale = torch.where(chosen, gates / gates.detach().clamp_min(1e-9), torch.zeros_like(gates)) / self.top_k
        out = torch.zeros_like(z)
        for index, expert in enumerate(self.experts):
            tokens = chosen[..., index]
            if tokens.any():
                out[tokens] = out[tokens] + expert(z[tokens]) * scale[..., index][tokens, None].to(z.dtype)
        return out
