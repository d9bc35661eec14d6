"""Backbone loading: open_clip from a local checkpoint, offline fail-fast and fallback, MiniLM weights."""

import json
import logging
import time

import pytest
import torch
from safetensors.torch import save_file

from mamol_core.backbones import build_backbone, openclip, resolve_backbone
from mamol_core.backbones.minilm import minilm_directory
from mamol_core.config import BackboneSpec
from mamol_core.errors import MamolError

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_clip_checkpoint(tmp_path):
    import open_clip

    (tmp_path / "mamol-test-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "mamol-test-tiny-clip.json")
    model = open_clip.create_model("mamol-test-tiny-clip")
    path = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def saved_and_loaded(model, config, path):
    """``model`` written to ``path`` with ``config`` and read back as mamol-map reads it: (model, config)."""
    from mamol_core.config import MamolConfig, ProtocolSpec, TrainSpec
    from mamol_core.modelfile.weights import load_model, save_model

    save_model(model, MamolConfig(model=config, protocol=ProtocolSpec(0.5, "both", 0), train=TrainSpec()), path)
    return load_model(path)


def assert_same_predictions(loaded, model):
    x, mask = torch.randn(3, 5, 6, 6), torch.tensor([[True, True], [True, False], [False, True]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x, mask), model(x, mask), rtol=0, atol=0)


def test_openclip_backbone_loads_a_local_checkpoint(tiny_clip_checkpoint):
    path, reference = tiny_clip_checkpoint
    backbone = build_backbone(BackboneSpec("openclip:mamol-test-tiny-clip", str(path)))
    assert backbone.width == 32 and len(backbone.blocks) == 3
    assert torch.equal(backbone.blocks[1].mlp.c_fc.weight, reference.visual.transformer.resblocks[1].mlp.c_fc.weight)
    assert not any(p.requires_grad for p in backbone.parameters())
    tokens = torch.randn(2, 10, 32)
    expected = reference.visual.ln_post(reference.visual.transformer(reference.visual.ln_pre(tokens)))
    torch.testing.assert_close(backbone(tokens), expected)


def test_wrong_local_checkpoint_is_a_one_line_error(tiny_clip_checkpoint, tmp_path):
    path, _ = tiny_clip_checkpoint
    with pytest.raises(MamolError, match="no such backbone weights file"):
        build_backbone(BackboneSpec("clip-vit-b-16", str(tmp_path / "absent.pt")))
    with pytest.raises(MamolError, match="open_clip could not load these weights"):
        build_backbone(BackboneSpec("clip-vit-b-16", str(path)))


def test_clip_without_weights_or_network_fails_fast(monkeypatch):
    monkeypatch.setattr(openclip, "cached_weights", lambda model, tag: None)
    monkeypatch.setattr(openclip, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(MamolError, match="not on disk and the hub cannot be reached; pass --backbone-weights"):
        build_backbone(BackboneSpec("clip-vit-b-16"))
    assert time.perf_counter() - start < 10


def test_auto_falls_back_to_the_offline_backbone_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(openclip, "cached_weights", lambda model, tag: None)
    monkeypatch.setattr(openclip, "hub_reachable", lambda timeout=3.0: False)
    with caplog.at_level(logging.WARNING):
        spec, backbone = resolve_backbone(BackboneSpec("auto"))
    assert spec.name == "minilm-l6@3" and backbone.width == 384 and len(backbone.blocks) == 3
    assert "hub cannot be reached; using the offline backbone minilm-l6@3 instead (for CLIP, give --backbone-weights PATH" in caplog.text
    assert "--backbone auto" not in caplog.text  # it is what ran


def test_hub_probe_respects_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert openclip.hub_reachable() is False


def test_unknown_backbone_name():
    with pytest.raises(MamolError, match="unknown backbone 'vit-huge'"):
        build_backbone(BackboneSpec("vit-huge"))


@pytest.mark.parametrize("backbone", ["tiny", "scratch-small", "vit-b-16-random@2"])
def test_weights_for_a_backbone_that_loads_none_are_refused_before_any_data_is_read(backbone, tmp_path):
    from click.testing import CliRunner

    from mamol_cli import train

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    result = CliRunner().invoke(train.main, ["--scene", str(tmp_path / "no_scene"), "--backbone", backbone, "--backbone-weights", str(weights),
                                             "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 1 and f"the backbone {backbone.split('@')[0]} loads no pretrained weights" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "m.safetensors").exists()


def test_minilm_weights_given_as_another_file_name_it(tmp_path):
    folder = minilm_directory(None)
    assert minilm_directory(str(folder / "config.json")) == folder  # one of its two files: its folder
    (tmp_path / "weights.bin").write_bytes(b"x")  # said before: "config.json: missing"
    with pytest.raises(MamolError, match=r"--backbone-weights .*weights\.bin: give the MiniLM folder holding config\.json"):
        minilm_directory(str(tmp_path / "weights.bin"))


def test_minilm_matches_the_reference_bert_implementation():
    transformers = pytest.importorskip("transformers")
    folder = minilm_directory(None)
    reference = transformers.BertModel.from_pretrained(str(folder), local_files_only=True).eval()
    ours = build_backbone(BackboneSpec("minilm-l6"))
    embeddings = torch.randn(2, 12, 384)
    with torch.inference_mode():
        hidden = reference.embeddings.LayerNorm(embeddings)
        for layer in reference.encoder.layer:
            hidden = layer(hidden)[0] if isinstance(layer(hidden), tuple) else layer(hidden)
        torch.testing.assert_close(ours(embeddings), hidden, rtol=1e-4, atol=1e-4)


def test_random_openclip_tower_is_seeded_and_travels_in_the_model_file(tiny_clip_checkpoint, tmp_path):
    from dataclasses import replace

    from mamol_core.model import build_model
    from tests.conftest import tiny_config

    rng_before = torch.random.get_rng_state()
    first = build_backbone(BackboneSpec("openclip:mamol-test-tiny-clip"))
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    second = build_backbone(BackboneSpec("openclip:mamol-test-tiny-clip"))
    assert first.ships_weights and all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))

    config = replace(tiny_config(), backbone=BackboneSpec("openclip:mamol-test-tiny-clip"))
    model = build_model(config)
    with torch.no_grad():
        model.backbone.blocks[2].mlp.base.c_fc.weight.add_(1.0)
    loaded, _ = saved_and_loaded(model, config, tmp_path / "random_clip.safetensors")
    assert_same_predictions(loaded, model)


def test_scratch_backbone_trains_with_the_experts():
    from dataclasses import replace

    from mamol_core.model import build_model
    from tests.conftest import tiny_config

    model = build_model(replace(tiny_config(), backbone=BackboneSpec("scratch-small")))
    own = [p for name, p in model.backbone.named_parameters() if ".adapter." not in name]
    assert all(p.requires_grad for p in own)
    model(torch.randn(2, 5, 6, 6), torch.ones(2, 2, dtype=torch.bool)).float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)


def test_a_depth_suffix_keeps_the_first_blocks_and_their_weights(tiny_clip_checkpoint, tmp_path):
    from dataclasses import replace

    from mamol_core.model import build_model
    from tests.conftest import tiny_config

    full = build_backbone(BackboneSpec("openclip:mamol-test-tiny-clip"))
    cut = build_backbone(BackboneSpec("openclip:mamol-test-tiny-clip@2"))
    assert len(full.blocks) == 3 and len(cut.blocks) == 2
    assert all(torch.equal(p, q) for p, q in zip(cut.blocks.parameters(), full.blocks[:2].parameters()))
    assert not any(name.startswith("blocks.2.") for name, _ in cut.named_parameters())
    tokens = torch.randn(2, 5, 32)
    with torch.inference_mode():
        expected = full.ln_post(full.blocks[1](full.blocks[0](full.ln_pre(tokens))))
        torch.testing.assert_close(cut(tokens), expected)

    config = replace(tiny_config(), backbone=BackboneSpec("tiny@1"), experts=replace(tiny_config().experts, num_layers=6))
    model = build_model(config)
    assert len(model.backbone.blocks) == 1 and model.expert_layers == [0]
    loaded, saved = saved_and_loaded(model, config, tmp_path / "shallow.safetensors")
    assert saved.model.backbone.name == "tiny@1" and len(loaded.backbone.blocks) == 1
    assert_same_predictions(loaded, model)


@pytest.mark.parametrize("name, message", [
    ("tiny@3", "backbone 'tiny@3': tiny has 2 blocks, so keep 1 to 2"),
    ("tiny@0", "what follows '@' is how many of its first blocks to keep, 1 or more"),
    ("tiny@two", "what follows '@' is how many of its first blocks to keep, 1 or more"),
    ("vit-huge@4", "unknown backbone 'vit-huge@4'"),
])
def test_an_impossible_depth_is_a_one_line_error(name, message):
    with pytest.raises(MamolError, match=message):
        build_backbone(BackboneSpec(name))


def test_auto_keeps_the_depth_it_was_asked_for(monkeypatch, caplog):
    monkeypatch.setattr(openclip, "cached_weights", lambda model, tag: None)
    monkeypatch.setattr(openclip, "hub_reachable", lambda timeout=3.0: False)
    with caplog.at_level(logging.WARNING):
        spec, backbone = resolve_backbone(BackboneSpec("auto@4"))
    assert spec.name == "minilm-l6@4" and len(backbone.blocks) == 4
    assert "using the offline backbone minilm-l6@4" in caplog.text


def test_a_frozen_backbone_cut_to_its_first_blocks_is_rebuilt_from_its_source_when_loaded(tmp_path):
    from dataclasses import replace

    from mamol_core.model import build_model
    from safetensors.torch import load_file
    from tests.conftest import tiny_config

    config = replace(tiny_config(), backbone=BackboneSpec("minilm-l6@2"))
    model = build_model(config)
    assert len(model.backbone.blocks) == 2 and model.expert_layers == [0, 1]
    loaded, _ = saved_and_loaded(model, config, tmp_path / "shallow_minilm.safetensors")
    stored = load_file(str(tmp_path / "shallow_minilm.safetensors"))
    assert not any(".base." in key or key.startswith("backbone.blocks.2") for key in stored)  # frozen weights stay at their source
    assert len(loaded.backbone.blocks) == 2
    assert_same_predictions(loaded, model)
