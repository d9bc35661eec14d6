"""The token layout: per-modality backbone passes, multi-pixel tokens, the pixel-shuffle head."""

import pytest
import torch

from conftest import tiny_config
from mamol_core.config import LayoutSpec
from mamol_core.errors import MamolError
from mamol_core.model import build_model

MASK = torch.tensor([[True, False], [True, True], [False, True], [True, False], [True, True]])


def sequences_through_backbone(model, x, mask) -> list[tuple[int, int]]:
    """(sequences, tokens) of every backbone call made while predicting ``x``."""
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[:2])))
    try:
        model(x, mask)
    finally:
        handle.remove()
    return seen


def test_an_absent_modality_costs_no_backbone_sequence():
    model = build_model(tiny_config(patch=6, token=2))
    calls = sequences_through_backbone(model, torch.randn(5, 5, 6, 6), MASK)
    assert calls == [(int(MASK.sum()), 9)]
    assert sequences_through_backbone(model, torch.randn(2, 5, 6, 6), torch.tensor([[True, False], [True, False]])) == [(2, 9)]


def test_joint_encoding_puts_only_present_sensors_in_one_sequence_per_sample():
    """One call per sequence length; a sample's sequence holds 9 tokens per present sensor, none for an absent one."""
    model = build_model(tiny_config(patch=6, token=2, encoding="joint"))
    calls = sequences_through_backbone(model, torch.randn(5, 5, 6, 6), MASK)
    assert sorted(calls) == [(2, 18), (3, 9)]
    assert sum(n * t for n, t in calls) == int(MASK.sum()) * 9
    assert sequences_through_backbone(model, torch.randn(2, 5, 6, 6), torch.tensor([[False, True], [False, True]])) == [(2, 9)]


def test_joint_sequences_hold_each_samples_own_sensors_in_order():
    """Three sensors, patterns of one length mixed in one call: each sample's features are those of
    the backbone run on its own present sensors' tokens, concatenated in modality order."""
    model = build_model(tiny_config(modalities=(("a", 3), ("b", 2), ("c", 1)), encoding="joint")).eval()
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    mask = torch.tensor([[True, False, True], [False, True, True], [True, True, False], [False, False, True], [True, True, True]])
    x = torch.randn(len(mask), 6, 6, 6)
    with torch.inference_mode():
        features = model.encode(x, mask)
        for i, row in enumerate(mask):
            present = row.nonzero().squeeze(1).tolist()
            sequence = model._embed_present(x[i : i + 1], mask[i : i + 1])[2].flatten(0, 1)[None]
            expected = model._run_backbone(sequence, mask[i : i + 1]).unflatten(1, (len(present), 9))
            torch.testing.assert_close(features[i, present], expected[0], rtol=1e-5, atol=1e-5)
            absent = [m for m in range(3) if m not in present]
            assert not features[i, absent].any()


def test_joint_encoding_lets_sensors_attend_to_each_other():
    """With joint encoding a sensor's features depend on the other present sensor's input; separately they do not."""
    for encoding, coupled in (("joint", True), ("separate", False)):
        model = build_model(tiny_config(encoding=encoding)).eval()
        x = torch.randn(1, 5, 6, 6)
        other = x.clone()
        other[:, 3:] = torch.randn(1, 2, 6, 6)
        both = torch.tensor([[True, True]])
        with torch.inference_mode():
            first = model.encode(x, both)[:, 0]
            changed = model.encode(other, both)[:, 0]
        assert (not torch.equal(first, changed)) == coupled


@pytest.mark.parametrize("encoding", ["separate", "joint"])
def test_garbage_in_an_absent_modality_changes_nothing(encoding):
    model = build_model(tiny_config(encoding=encoding)).eval()
    x = torch.randn(5, 5, 6, 6)
    garbage = x.clone()
    garbage[MASK[:, 0].logical_not(), :3] = torch.randn(1, 3, 6, 6) * 1e4
    garbage[MASK[:, 1].logical_not(), 3:] = torch.randn(1, 2, 6, 6) * 1e4
    with torch.inference_mode():
        torch.testing.assert_close(model(garbage, MASK), model(x, MASK), rtol=0, atol=0)
    garbage[MASK[:, 1].logical_not(), 3:] = float("nan")
    with torch.inference_mode():
        torch.testing.assert_close(model(garbage, MASK), model(x, MASK), rtol=0, atol=0)


@pytest.mark.parametrize("encoding", ["separate", "joint"])
def test_a_sample_is_predicted_the_same_alone_and_in_a_mixed_batch(encoding):
    model = build_model(tiny_config(encoding=encoding)).eval()
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(5, 5, 6, 6)
    with torch.inference_mode():
        batch = model(x, MASK)
        for i in range(len(x)):
            torch.testing.assert_close(model(x[i : i + 1], MASK[i : i + 1]), batch[i : i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("patch, token", [(6, 1), (6, 2), (6, 3), (8, 4)])
def test_every_pixel_of_a_patch_gets_its_own_logits(patch, token):
    model = build_model(tiny_config(patch=patch, token=token)).eval()
    torch.nn.init.normal_(model.head[1].weight)
    with torch.inference_mode():
        logits = model(torch.randn(2, 5, patch, patch), MASK[:2])
    assert logits.shape == (2, 4, patch, patch)
    flat = logits[0].flatten(1).T
    assert len(torch.unique(flat, dim=0)) == patch * patch


def test_the_head_puts_each_tokens_pixels_in_place():
    """A feature that only one token carries moves only the ``s x s`` pixels of that token."""
    model = build_model(tiny_config(patch=6, token=2)).eval()
    features = torch.zeros(1, 2, 9, model.backbone.width)
    base = model.decode(features)
    features[0, 0, 4] = 3.0  # the centre token of the 3 x 3 token grid
    changed = (model.decode(features) - base).abs().sum(1)[0] > 0
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[2:4, 2:4] = True
    assert torch.equal(changed, expected)


def test_a_layout_the_network_cannot_build_is_refused():
    with pytest.raises(MamolError, match="multiple of the token side"):
        LayoutSpec(10, 4).check()
    with pytest.raises(MamolError, match="multiple of the token side"):
        LayoutSpec(12, 0).check()
    with pytest.raises(MamolError, match="encoding 'early' is unknown"):
        LayoutSpec(encoding="early").check()
