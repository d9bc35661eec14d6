"""A bank of LoRA experts ``B_e A_e z`` evaluated together in two matrix products."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRABank(nn.Module):
    """``count`` low-rank experts on a ``width``-dimensional input (eq. 13 of the paper).

    ``A`` is initialised like a linear layer and ``B`` to zero, so every expert starts at exactly
    zero and training begins at the frozen backbone. The output is
    ``scale * sum_e coeff_e * B_e A_e z`` with ``scale = alpha / rank``.
    """

    def __init__(self, count: int, width: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.count, self.rank, self.scale = count, rank, alpha / rank
        self.A = nn.Parameter(torch.empty(count * rank, width))
        self.B = nn.Parameter(torch.zeros(count * rank, width))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, z: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
        """``z``: ``[B, N, width]``; ``coeff``: ``[B, N, count]`` (or broadcastable). Returns ``[B, N, width]``."""
        low = (z @ self.A.t()).unflatten(-1, (self.count, self.rank))
        low = low * coeff.unsqueeze(-1).to(low.dtype)
        return (low.flatten(-2) @ self.B) * self.scale
