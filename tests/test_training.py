"""Training end to end on the synthetic scene, and the model-file round trip."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import CLI_FAST, copy_with_config, tiny_config
from mamol_cli import train
from mamol_core import FORMAT_VERSION
from mamol_core.bench.grid import METHODS
from mamol_core.config import BackboneSpec, ExpertSpec, LayoutSpec, MamolConfig, ProtocolSpec, TrainSpec
from mamol_core.data.patches import PatchSampler
from mamol_core.data.pixels import PixelSet
from mamol_core.data.scene import open_scene
from mamol_core.errors import MamolError
from mamol_core.evaluation.predict import predict_pixels
from mamol_core.evaluation.score import evaluate_run
from mamol_core.experts.lora import LoRABank
from mamol_core.model import build_model
from mamol_core.modelfile.header import read_config
from mamol_core.modelfile.weights import load_model, save_model
from mamol_core.training.fit import train_on_scene
from mamol_core.training.loop import LINEAR_MAPS, optimizer_groups, warmup_linear


@pytest.fixture(scope="module")
def trained(scene_dir):
    scene = open_scene(scene_dir)
    return train_on_scene(scene, BackboneSpec("tiny"), ExpertSpec(num_layers=2, rank=4), layout=LayoutSpec(6, 2, 32),
                          protocol=ProtocolSpec(0.5, "both", 0), train=TrainSpec(epochs=40, min_steps=0, batch_size=64, lr=5e-3),
                          device=torch.device("cpu"), amp_dtype=None, progress_mode="none")


def with_presence(pixels: PixelSet, pattern) -> PixelSet:
    return PixelSet(pixels.rows, pixels.cols, pixels.targets, np.tile(np.array(pattern), (len(pixels), 1)))


def accuracy(run, pattern, classes) -> float:
    """Accuracy on the test pixels of ``classes`` (class values) with every pixel given ``pattern``."""
    pixels = with_presence(run.prepared.test, pattern)
    predicted = predict_pixels(run.model, run.sampler, pixels, 512, None, "none")
    chosen = np.isin(pixels.targets + 1, classes)
    assert chosen.sum() > 20
    return float((predicted[chosen] == pixels.targets[chosen]).mean())


HEIGHT_ONLY = [1, 2]  # Grass and Trees share a spectrum and differ in height
SPECTRUM_ONLY = [1, 3, 5, 6]  # Grass, Bare soil, Water, Road are all low, differ in spectrum


def test_learns_a_task_that_needs_both_modalities(trained):
    assert trained.history[-1] < trained.history[0] / 3
    both, dsm, hsi = [True, True], [True, False], [False, True]
    assert accuracy(trained, both, HEIGHT_ONLY) > 0.9 and accuracy(trained, both, SPECTRUM_ONLY) > 0.9
    assert accuracy(trained, hsi, HEIGHT_ONLY) < 0.8
    assert accuracy(trained, dsm, SPECTRUM_ONLY) < 0.7


def test_report_breaks_down_by_missing_pattern(trained):
    evaluation = evaluate_run(trained, None, progress_mode="none")
    names = set(evaluation.matrices)
    assert names == {"overall", "complete", "missing dsm", "missing hsi"}
    assert sum(evaluation.matrices[n].sum() for n in names - {"overall"}) == evaluation.matrices["overall"].sum()


def test_save_load_round_trip_reproduces_predictions(trained, tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(trained.model, trained.config, path)
    model, config = load_model(path)
    assert config == trained.config
    assert config.model.modalities[0].mean == trained.config.model.modalities[0].mean
    x = torch.randn(6, 9, 6, 6)
    mask = torch.tensor([[True, True], [True, False], [False, True]] * 2)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, mask), trained.model(x, mask), rtol=0, atol=0)
    sampler = PatchSampler(torch.from_numpy(trained.prepared.data), 6)
    a = predict_pixels(model, sampler, trained.prepared.test, 256, None, "none")
    b = predict_pixels(trained.model, trained.sampler, trained.prepared.test, 256, None, "none")
    assert np.array_equal(a, b)


def test_model_file_of_another_format_is_refused(trained, tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(trained.model, trained.config, path)
    assert read_config(path).format_version == 4  # band values read with their declared scale and offset
    for version, message in ((0, "model format 0.*retrain it on the same inputs with this mamol"),
                             (FORMAT_VERSION + 1, f"model format {FORMAT_VERSION + 1}.*upgrade mamol to use it")):
        other = tmp_path / f"format{version}.safetensors"
        copy_with_config(path, other, lambda config: config | {"format_version": version})
        with pytest.raises(MamolError, match=message):
            read_config(other)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(MamolError, match="not a mamol model"):
        read_config(tmp_path / "junk.safetensors")


def test_a_config_written_before_the_encoding_was_recorded_reads_as_separate(trained):
    data = json.loads(trained.config.to_json())
    del data["model"]["layout"]["encoding"]
    config = MamolConfig.from_json(json.dumps(data))
    assert config.model.layout == LayoutSpec(6, 2, 32, "separate")


def test_warmup_then_linear_decay():
    factor = warmup_linear(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5) and factor(100) == 0.0


def test_dense_evaluation_agrees_with_per_pixel(trained):
    from mamol_core.evaluation.predict import predict_pixels_dense

    prepared = trained.prepared
    per_pixel = predict_pixels(trained.model, trained.sampler, prepared.test, 512, None, "none")
    dense = predict_pixels_dense(trained.model, torch.from_numpy(prepared.data), torch.from_numpy(prepared.valid),
                                 prepared.test, 3, 64, None, "none")
    assert (dense == per_pixel).mean() > 0.9
    truth = prepared.test.targets
    assert abs((dense == truth).mean() - (per_pixel == truth).mean()) < 0.05


def test_small_label_sets_get_at_least_min_steps():
    from mamol_core.training.loop import schedule_steps

    assert schedule_steps(819, TrainSpec(epochs=30, min_steps=500)) == 500
    assert schedule_steps(819, TrainSpec(epochs=100, min_steps=500)) == 700
    assert schedule_steps(50_000, TrainSpec(epochs=2, min_steps=0)) == 782


def test_training_stops_after_the_scheduled_steps(scene_dir):
    from mamol_core.data.pixels import prepare_scene
    from mamol_core.training.fit import training_label_map
    from mamol_core.training.loop import train_model

    scene = open_scene(scene_dir)
    prepared, _ = prepare_scene(scene, ProtocolSpec(0.5, "both", 0), margin=6)
    model = build_model(tiny_config(modalities=(("dsm", 1), ("hsi", 8)), classes=6))
    sampler = PatchSampler(torch.from_numpy(prepared.data), 6, training_label_map(prepared, torch.device("cpu")))
    steps = []
    model.head.register_forward_hook(lambda module, args, out: steps.append(1))
    spec = TrainSpec(epochs=1, min_steps=7, batch_size=64)
    history = train_model(model, sampler, prepared.train, spec, None, "none").history
    per_epoch = -(-len(prepared.train) // 64)
    assert len(steps) == 7 and len(history) == -(-7 // per_epoch)


@pytest.mark.parametrize("method", ["mamol", "mmp", "dcp", "moe_rep"])
def test_weight_decay_reaches_weight_matrices_only_and_experts_learn_at_their_own_rate(method):

    spec = METHODS[method]
    model = build_model(tiny_config(method=spec.method, placement=spec.placement, num_dynamic=spec.num_dynamic, top_k=spec.top_k,
                                    prompt_length=spec.prompt_length))
    groups = optimizer_groups(model, 0.02, 1e-3, 0.25)
    names = {id(p): n for n, p in model.named_parameters()}
    named = [{names[id(p)] for p in g["params"]} for g in groups]
    decayed_names = set().union(*(n for n, g in zip(named, groups) if g["weight_decay"]))
    plain_names = set().union(*(n for n, g in zip(named, groups) if not g["weight_decay"]))
    assert {g["weight_decay"] for g in groups} == {0.02, 0.0}
    assert decayed_names | plain_names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(map(len, named)) == len(decayed_names | plain_names)
    assert all(n.endswith((".weight", ".A", ".B")) for n in decayed_names) and "head.1.weight" in decayed_names
    assert {"position", "modality_type", "head.0.weight", "head.0.bias", "head.1.bias"} <= plain_names
    assert not any(n.endswith((".psi.weight", ".table", ".queries", ".common", ".start")) for n in decayed_names)
    # What the method adds to the frozen backbone learns at lr x 0.25, the rest at lr.
    slow = set().union(*(n for n, g in zip(named, groups) if g["lr"] == pytest.approx(2.5e-4)))
    fast = set().union(*(n for n, g in zip(named, groups) if g["lr"] == pytest.approx(1e-3)))
    assert slow and slow | fast == decayed_names | plain_names and all(n.startswith("backbone.") for n in slow)
    assert not any(n.startswith("backbone.") for n in fast) and {"head.1.weight", "position"} <= fast
    # At scale 1: two groups, decayed then plain, the layout of training states written before the scale existed.
    decayed, plain = optimizer_groups(model, 0.02, 1e-3)
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.02, 0.0)
    assert {names[id(p)] for p in decayed["params"]} == decayed_names and {names[id(p)] for p in plain["params"]} == plain_names


def test_optimizer_state_of_the_two_group_layout_loads_at_scale_1():
    """A state saved by an optimizer over [decayed, plain] (every release before --expert-lr-scale) resumes."""
    model = build_model(tiny_config())
    trainable = [(m, n, p) for m in model.modules() for n, p in m.named_parameters(recurse=False) if p.requires_grad]
    matrix = [p for m, n, p in trainable if isinstance(m, LoRABank) or (isinstance(m, LINEAR_MAPS) and n == "weight")]
    other = [p for m, n, p in trainable if not any(p is q for q in matrix)]
    old = torch.optim.AdamW([{"params": matrix, "weight_decay": 0.02}, {"params": other, "weight_decay": 0.0}], lr=1e-3)
    model(torch.randn(2, 5, 6, 6), torch.ones(2, 2, dtype=torch.bool)).sum().backward()
    old.step()
    new = torch.optim.AdamW(optimizer_groups(model, 0.02, 1e-3), lr=1e-3)
    new.load_state_dict(old.state_dict())
    assert len(new.state) == len(matrix) + len(other)


def test_expert_lr_scale_slows_the_experts_only():
    """One step at scale 0 would leave the experts unchanged; at a small scale they move far less than at 1."""
    torch.manual_seed(0)
    base = build_model(tiny_config())
    moved = {}
    for scale in (1.0, 0.01):
        model = build_model(tiny_config())
        model.load_state_dict(base.state_dict())
        optimizer = torch.optim.AdamW(optimizer_groups(model, 0.0, 1e-2, scale))
        x, mask = torch.randn(4, 5, 6, 6), torch.ones(4, 2, dtype=torch.bool)
        for _ in range(2):  # B starts at zero: the second step is the first to move A
            optimizer.zero_grad()
            model(x, mask).square().mean().backward()
            optimizer.step()
        after = dict(model.named_parameters())
        moved[scale] = {name: (after[name] - p).abs().max().item() for name, p in base.named_parameters() if p.requires_grad}
    experts = [n for n in moved[1.0] if n.startswith("backbone.")]
    assert experts and all(moved[0.01][n] < 0.05 * moved[1.0][n] for n in experts if moved[1.0][n] > 0)
    assert moved[0.01]["head.1.weight"] == pytest.approx(moved[1.0]["head.1.weight"], rel=0.5)


def test_mamol_train_saves_the_expert_lr_scale_in_the_model_file(scene_dir, tmp_path):
    model = tmp_path / "slow_experts.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--expert-lr-scale", "0.5", "--no-eval", "-o", str(model), *CLI_FAST])
    assert result.exit_code == 0, result.output
    assert read_config(model).train.expert_lr_scale == 0.5
    refused = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--expert-lr-scale", "0", "-o", str(tmp_path / "x.safetensors")])
    assert refused.exit_code == 2 and "--expert-lr-scale" in refused.output


def test_modality_dropout_removes_one_sensor_from_a_share_of_samples_never_the_last():
    from mamol_core.training.loop import drop_one_modality

    presence = torch.tensor([[True, True, True]] * 3000 + [[True, False, False]] * 1000)
    out = drop_one_modality(presence, 0.3, torch.Generator().manual_seed(0))
    lost = (presence.sum(1) - out.sum(1))
    assert set(lost.tolist()) <= {0, 1} and not (out & ~presence).any()
    assert (out.sum(1) >= 1).all() and (lost[3000:] == 0).all()
    assert abs(lost[:3000].float().mean().item() - 0.3) < 0.03
    assert torch.equal(out, drop_one_modality(presence, 0.3, torch.Generator().manual_seed(0)))
    columns = (presence & ~out)[:3000].sum(0).float()
    assert (columns / columns.sum() - 1 / 3).abs().max() < 0.05  # each sensor as often
