"""How the missing-modality mask reaches expert layers that sit deep inside a frozen backbone."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class RoutingContext:
    """The current batch's presence mask ``[B, M]`` (1 = modality present), set by the model for
    the duration of one forward pass; ``carried`` is what one block hands to the next within that
    pass (DCP's correlated prompts); ``gates`` collects router outputs when ``record`` is on."""

    mask: torch.Tensor | None = None
    carried: torch.Tensor | None = None
    record: bool = False
    gates: dict[int, torch.Tensor] = field(default_factory=dict)

    def end_pass(self) -> None:
        """Drop the per-pass tensors so that no activation outlives its forward pass."""
        self.mask = None
        self.carried = None

    def keep_gates(self, layer: int, gates: torch.Tensor) -> None:
        """Record ``layer``'s router output when ``record`` is on (for routing statistics)."""
        if self.record:
            self.gates[layer] = gates.detach()

    def require_mask(self) -> torch.Tensor:
        if self.mask is None:
            raise RuntimeError("expert layer called outside MaMOLClassifier.forward: no modality mask is set")
        return self.mask


class ExpertFFN(nn.Module):
    """Wraps a frozen feed-forward network: ``ffn(z) + adapter(z, mask)`` (eq. 12)."""

    def __init__(self, base: nn.Module, adapter: nn.Module, context: RoutingContext, layer: int) -> None:
        super().__init__()
        self.base, self.adapter, self.layer = base, adapter, layer
        self._context = context

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.base(z) + self.adapter(z, self._context, self.layer)
