"""The MaMOL layer: expert gating, routing, zero initialisation, frozen backbone."""

import torch

from conftest import tiny_config
from mamol_core.config import ExpertSpec
from mamol_core.experts.context import RoutingContext
from mamol_core.experts.mamol import MaMOLAdapter, pattern_index
from mamol_core.model import build_model


def adapter_with_random_b(spec: ExpertSpec, modalities: int = 2, width: int = 16) -> MaMOLAdapter:
    adapter = MaMOLAdapter(width, modalities, spec)
    torch.nn.init.normal_(adapter.bank.B)
    return adapter


def single_expert_output(adapter: MaMOLAdapter, z: torch.Tensor, expert: int) -> torch.Tensor:
    coeff = torch.zeros(*z.shape[:2], adapter.bank.count)
    coeff[..., expert] = 1
    return adapter.bank(z, coeff)


def test_modality_expert_adds_exactly_zero_when_modality_missing():
    adapter = adapter_with_random_b(ExpertSpec(shared=False, num_dynamic=0))
    z = torch.randn(2, 7, 16)
    context = RoutingContext(mask=torch.tensor([[True, False], [False, True]]))
    out = adapter(z, context, 0)
    expected_first = single_expert_output(adapter, z, 0)[0]
    expected_second = single_expert_output(adapter, z, 1)[1]
    assert torch.equal(out[0], expected_first)
    assert torch.equal(out[1], expected_second)
    assert single_expert_output(adapter, z, 1)[0].abs().sum() > 0


def test_shared_expert_always_acts():
    adapter = adapter_with_random_b(ExpertSpec(modality=False, num_dynamic=0))
    z = torch.randn(3, 5, 16)
    for mask in ([True, True], [True, False], [False, True]):
        context = RoutingContext(mask=torch.tensor([mask] * 3))
        out = adapter(z, context, 0)
        assert out.abs().sum() > 0
        torch.testing.assert_close(out, single_expert_output(adapter, z, 0))


def test_router_activates_exactly_top_k():
    for experts, k in ((2, 1), (4, 2), (5, 3)):
        adapter = adapter_with_random_b(ExpertSpec(num_dynamic=experts, top_k=k))
        z = torch.randn(4, 9, 16)
        mask = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
        gates = adapter.router(z, mask)
        assert gates.shape == (4, 9, experts)
        assert torch.all((gates > 0).sum(-1) == k)
        coeff = adapter.coefficients(z, mask)
        assert torch.all(coeff[..., 0] == 1)
        assert torch.equal(coeff[..., 1:3], mask.float()[:, None, :].expand(-1, 9, -1))


def test_router_sees_the_missing_pattern():
    adapter = adapter_with_random_b(ExpertSpec(num_dynamic=3, top_k=3))
    z = torch.randn(1, 4, 16).expand(2, -1, -1)
    gates = adapter.router(z, torch.tensor([[True, False], [False, True]]))
    assert not torch.allclose(gates[0], gates[1])
    assert torch.equal(pattern_index(torch.tensor([[True, False], [False, True], [True, True]])), torch.tensor([1, 2, 3]))


def test_zero_initialised_lora_leaves_backbone_output_unchanged():
    with_experts = build_model(tiny_config())
    plain_config = tiny_config(num_layers=0)
    without = build_model(plain_config)
    state = {k: v for k, v in with_experts.state_dict().items() if "adapter" not in k}
    without.load_state_dict({k.replace(".base.", "."): v for k, v in state.items()})
    x = torch.randn(3, 5, 6, 6)
    mask = torch.tensor([[True, True], [True, False], [False, True]])
    torch.testing.assert_close(with_experts(x, mask), without(x, mask), rtol=0, atol=0)


def test_backbone_weights_receive_no_gradient():
    model = build_model(tiny_config())
    model.train()
    x = torch.randn(4, 5, 6, 6)
    model(x, torch.tensor([[True, True], [True, False], [False, True], [True, True]])).sum().backward()
    frozen = [n for n, p in model.backbone.named_parameters() if "adapter" not in n]
    assert frozen
    for name, parameter in model.backbone.named_parameters():
        if "adapter" in name:
            assert parameter.requires_grad
        else:
            assert not parameter.requires_grad and parameter.grad is None, name
    assert model.head[1].weight.grad is not None
    assert all(p.grad is not None for p in model.tokenizers.parameters())


def test_missing_modality_input_is_ignored():
    model = build_model(tiny_config())
    x = torch.randn(2, 5, 6, 6)
    mask = torch.tensor([[True, False], [True, False]])
    changed = x.clone()
    changed[:, 3:] = torch.randn(2, 2, 6, 6) * 100
    torch.testing.assert_close(model(x, mask), model(changed, mask))


def test_ablations_build_the_expected_experts():
    assert build_model(tiny_config(num_dynamic=0)).backbone.blocks[0].mlp.adapter.router is None
    adapter = build_model(tiny_config(shared=False, modality=False)).backbone.blocks[0].mlp.adapter
    assert (adapter.num_shared, adapter.num_modality, adapter.num_dynamic) == (0, 0, 2)
    assert build_model(tiny_config(modality=False)).backbone.blocks[0].mlp.adapter.bank.count == 3
