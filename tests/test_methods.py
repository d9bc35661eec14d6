"""The baselines of the benchmark: each builds, starts where it should, and trains only its own parameters."""

import pytest
import torch

from conftest import tiny_config
from mamol_core.bench.grid import METHODS
from mamol_core.mapping.dense import inference_model
from mamol_core.model import build_model

X = torch.randn(4, 5, 6, 6)
MASK = torch.tensor([[True, True], [True, False], [False, True], [True, True]])


def plain_output(model):
    """The same tokenizers, embeddings and head on the bare frozen backbone (the tiny backbone is seeded)."""
    reference = build_model(tiny_config(num_layers=0))
    with torch.no_grad():
        reference.position.copy_(model.position)
        reference.modality_type.copy_(model.modality_type)
    reference.tokenizers.load_state_dict(model.tokenizers.state_dict())
    reference.head.load_state_dict(model.head.state_dict())
    return reference(X, MASK)


@pytest.mark.parametrize("method", ["moe_ada", "moe_task", "moe_rep"])
def test_moe_baselines_start_at_the_frozen_backbone(method):
    spec = METHODS[method]
    model = build_model(tiny_config(method=spec.method, num_layers=2, rank=4, num_dynamic=spec.num_dynamic, top_k=spec.top_k))
    torch.testing.assert_close(model(X, MASK), plain_output(model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_only_its_own_parameters(method):
    spec = METHODS[method]
    config = tiny_config(method=spec.method, placement=spec.placement, num_layers=min(spec.num_layers, 2), rank=4,
                         num_dynamic=spec.num_dynamic, top_k=min(spec.top_k, max(spec.num_dynamic, 1)), shared=spec.shared,
                         modality=spec.modality, prompt_length=spec.prompt_length)
    model = build_model(config)
    model.train()
    out = model(X, MASK)
    assert out.shape == (4, 4, 6, 6)
    out.sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_backbone = {n for n, p in model.backbone.named_parameters() if not p.requires_grad}
    assert frozen_backbone and all(p.grad is None for n, p in model.backbone.named_parameters() if not p.requires_grad)
    assert any(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")) == (method != "baseline")
    assert "head.1.weight" in trainable
    with torch.inference_mode():
        assert inference_model(model, torch.bfloat16)(X.bfloat16(), MASK).shape == out.shape


@pytest.mark.parametrize("method", ["mmp", "dcp"])
def test_prompts_depend_on_the_missing_pattern(method):
    spec = METHODS[method]
    model = build_model(tiny_config(method=spec.method, placement="first", num_layers=2, prompt_length=spec.prompt_length))
    assert model.prompt_tokens == spec.prompt_length * (2 if method == "mmp" else 1)
    x = X[:1].expand(2, -1, -1, -1)
    a = model(x, torch.tensor([[True, True], [True, True]]))
    assert torch.allclose(a[0], a[1])
    prompts = model.backbone.blocks[0].prompts
    with torch.no_grad():
        (prompts.table if method == "mmp" else model.backbone.prompt_chain.start).normal_()
    b = model(x, torch.tensor([[True, True], [True, False]]))
    assert not torch.allclose(b[0], b[1])


def test_mmp_prompts_accumulate_and_dcp_prompts_replace_each_other():
    """MMP: each prompted block prepends its prompts in front of the earlier ones (sequence grows by
    the prompt length per block); DCP: each block's prompts replace the previous block's."""
    seen = {}
    for method in ("mmp", "dcp"):
        model = build_model(tiny_config(method=method, placement="first", num_layers=2, prompt_length=6))
        lengths = []
        for block in model.backbone.blocks[:2]:
            block.block.register_forward_pre_hook(lambda module, args, out=lengths: out.append(args[0].shape[1]))
        model(X, MASK)
        seen[method] = lengths
    tokens = 9  # (6 / 2) ** 2 tokens per modality pass
    assert seen["mmp"][:2] == [tokens + 6, tokens + 12] and seen["dcp"][:2] == [tokens + 6, tokens + 6]


def test_routed_moe_baselines_have_mamols_routed_capacity():
    for method in ("moe_ada", "moe_task"):
        assert (METHODS[method].num_dynamic, METHODS[method].top_k) == (METHODS["mamol"].num_dynamic, METHODS["mamol"].top_k)
        wide = METHODS[f"{method}_4x2"]
        assert (wide.method, wide.num_dynamic, wide.top_k) == (method, 4, 2)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_model_file_names_the_blocks_that_hold_experts(method, tmp_path):
    from click.testing import CliRunner

    from mamol_cli import info
    from mamol_core.config import MamolConfig
    from mamol_core.modelfile.header import expert_blocks
    from mamol_core.modelfile.weights import save_model

    spec = METHODS[method]
    config = tiny_config(method=spec.method, placement=spec.placement, num_layers=min(spec.num_layers, 1), rank=4,
                         num_dynamic=spec.num_dynamic, top_k=min(spec.top_k, max(spec.num_dynamic, 1)), shared=spec.shared,
                         modality=spec.modality, prompt_length=spec.prompt_length)
    model = build_model(config)
    path = tmp_path / "m.safetensors"
    save_model(model, MamolConfig(config), path)
    assert expert_blocks(path) == model.expert_layers == ([] if spec.num_layers == 0 else [1 if spec.placement == "last" else 0])
    described = CliRunner().invoke(info.main, [str(path)]).output
    assert f"experts: {spec.method}, in {'no block' if spec.num_layers == 0 else 'block ' + str(model.expert_layers[0])}," in described


def test_the_blocks_that_hold_experts_read_as_ranges_or_lists():
    from mamol_cli.info import blocks_text

    assert [blocks_text(b) for b in ([0, 1, 2, 3, 4, 5], [3], [1, 3], [])] == ["in blocks 0-5", "in block 3", "in blocks 1, 3",
                                                                               "in no block"]
