"""Expert and prompt layers, and how each method attaches them to a frozen backbone.

Methods: ``mamol`` (shared + modality + routed dynamic LoRA experts; its ablations switch parts
off through :class:`ExpertSpec`), ``moe_ada`` and ``moe_task`` (one routed LoRA pool, router on
the tokens or on tokens and pattern), ``moe_rep`` (trainable full-FFN experts replacing the FFN),
``mmp`` (prompts chosen by the missing pattern, accumulating block by block) and ``dcp`` (deep
correlated prompts that replace each other).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from mamol_core.backbones.base import FrozenBackbone
from mamol_core.config import ExpertSpec
from mamol_core.errors import MamolError
from mamol_core.experts.context import ExpertFFN, RoutingContext
from mamol_core.experts.mamol import MaMOLAdapter
from mamol_core.experts.moe import SwitchFFN, adapter_moe, task_moe
from mamol_core.experts.prompts import CorrelatedChain, DeepCorrelatedPrompts, MissingAwarePrompts, PromptedBlock


def expert_layers(depth: int, spec: ExpertSpec) -> list[int]:
    """Indices of the blocks that receive experts: the first or last ``num_layers`` (capped at depth)."""
    count = min(spec.num_layers, depth)
    if spec.placement == "last":
        return list(range(depth - count, depth))
    if spec.placement == "first":
        return list(range(count))
    raise MamolError(f"unknown expert placement {spec.placement!r}; use first or last")


def _residual(factory: Callable[[int, int, ExpertSpec], nn.Module]):
    """Attach ``factory``'s module beside each chosen block's frozen FFN: ``ffn(z) + module(z)``."""

    def attach(backbone: FrozenBackbone, count: int, spec: ExpertSpec, context: RoutingContext, layers: list[int]) -> int:
        for index in layers:
            block = backbone.blocks[index]
            block.mlp = ExpertFFN(block.mlp, factory(backbone.width, count, spec), context, index)
        return 0

    return attach


def _replace(backbone: FrozenBackbone, count: int, spec: ExpertSpec, context: RoutingContext, layers: list[int]) -> int:
    for index in layers:
        block = backbone.blocks[index]
        block.mlp = SwitchFFN(block.mlp, backbone.width, spec, context, index)
    return 0


def _mmp(backbone: FrozenBackbone, count: int, spec: ExpertSpec, context: RoutingContext, layers: list[int]) -> int:
    for step, index in enumerate(layers):
        prompts = MissingAwarePrompts(backbone.width, count, spec.prompt_length, context)
        backbone.blocks[index] = PromptedBlock(backbone.blocks[index], prompts, replaced=0, carried=step * spec.prompt_length)
    return spec.prompt_length * len(layers)


def _dcp(backbone: FrozenBackbone, count: int, spec: ExpertSpec, context: RoutingContext, layers: list[int]) -> int:
    chain = CorrelatedChain(backbone.width, count, spec.prompt_length // 3, max(len(layers), 1))
    backbone.prompt_chain = chain
    for step, index in enumerate(layers):
        prompts = DeepCorrelatedPrompts(backbone.width, count, spec.prompt_length, step, chain, context)
        carried = spec.prompt_length if step else 0
        backbone.blocks[index] = PromptedBlock(backbone.blocks[index], prompts, replaced=carried, carried=carried)
    return spec.prompt_length if layers else 0


#: method name -> attach(backbone, num_modalities, spec, context, layers) returning the number of prompt tokens.
METHODS: dict[str, Callable] = {
    "mamol": _residual(MaMOLAdapter),
    "moe_ada": _residual(adapter_moe),
    "moe_task": _residual(task_moe),
    "moe_rep": _replace,
    "mmp": _mmp,
    "dcp": _dcp,
}


def attach_experts(backbone: FrozenBackbone, num_modalities: int, spec: ExpertSpec, context: RoutingContext) -> tuple[list[int], int]:
    """Attach ``spec.method``'s modules to the chosen blocks; returns the block indices and how many
    prompt tokens lead the sequence after the backbone."""
    if spec.method not in METHODS:
        raise MamolError(f"unknown method {spec.method!r}; choose one of {', '.join(sorted(METHODS))}")
    layers = expert_layers(len(backbone.blocks), spec)
    return layers, METHODS[spec.method](backbone, num_modalities, spec, context, layers)
