"""Expert layers and how they are attached to a frozen backbone's feed-forward networks."""

from __future__ import annotations

from typing import Callable

from torch import nn

from mamol_core.backbones.base import FrozenBackbone
from mamol_core.config import ExpertSpec
from mamol_core.errors import MamolError
from mamol_core.experts.context import ExpertFFN, RoutingContext
from mamol_core.experts.mamol import MaMOLAdapter

#: method name -> factory(width, num_modalities, spec) of the per-block adapter module.
ADAPTERS: dict[str, Callable[[int, int, ExpertSpec], nn.Module]] = {
    "mamol": MaMOLAdapter,
}


def expert_layers(depth: int, spec: ExpertSpec) -> list[int]:
    """Indices of the blocks that receive experts: the first or last ``num_layers`` (capped at depth)."""
    count = min(spec.num_layers, depth)
    if spec.placement == "last":
        return list(range(depth - count, depth))
    if spec.placement == "first":
        return list(range(count))
    raise MamolError(f"unknown expert placement {spec.placement!r}; use first or last")


def attach_experts(backbone: FrozenBackbone, num_modalities: int, spec: ExpertSpec, context: RoutingContext) -> list[int]:
    """Wrap the ``.mlp`` of the chosen blocks with an :class:`ExpertFFN`; returns the block indices."""
    if spec.method not in ADAPTERS:
        raise MamolError(f"unknown method {spec.method!r}; choose one of {', '.join(sorted(ADAPTERS))}")
    layers = expert_layers(len(backbone.blocks), spec)
    for index in layers:
        block = backbone.blocks[index]
        adapter = ADAPTERS[spec.method](backbone.width, num_modalities, spec)
        block.mlp = ExpertFFN(block.mlp, adapter, context, index)
    return layers
