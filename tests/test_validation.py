"""Validation split carved from the training labels: held out in whole blocks, scored during
training, the best weights kept, early stopping, recorded in the model file, resumable."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mamol_cli import info, train
from mamol_core.config import MAX_CHECK_PIXELS, BackboneSpec, ExpertSpec, LayoutSpec, ProtocolSpec, TrainSpec, ValidationRecord
from mamol_core.data.scene import open_scene
from mamol_core.evaluation.predict import predict_pixels
from mamol_core.modelfile.header import read_config
from mamol_core.modelfile.weights import save_model
from mamol_core.training.fit import hold_out_validation, train_on_scene

BLOCK = 10


def train_with(scene_dir, **spec):
    return train_on_scene(open_scene(scene_dir), BackboneSpec("tiny"), ExpertSpec(num_layers=2, rank=4), LayoutSpec(6, 2, 32),
                          ProtocolSpec(0.5, "both", 0), TrainSpec(epochs=20, min_steps=0, batch_size=64, lr=5e-3, validation=0.25,
                                                                  validation_block=BLOCK, **spec),
                          torch.device("cpu"), None, "none")


@pytest.fixture(scope="module")
def kept_best(scene_dir):
    return train_with(scene_dir)


def test_validation_pixels_are_whole_blocks_of_training_labels_only(scene_dir):
    scene = open_scene(scene_dir)
    rest, held = hold_out_validation(scene, TrainSpec(validation=0.25, validation_block=BLOCK, seed=1))
    assert (held > 0).any() and not ((rest.train_labels > 0) & (held > 0)).any()
    assert np.array_equal(np.where(held > 0, held, rest.train_labels), scene.train_labels)
    blocks = lambda labels: {(r // BLOCK, c // BLOCK) for r, c in zip(*np.nonzero(labels))}  # noqa: E731
    assert not blocks(held) & blocks(rest.train_labels)
    share = (held > 0).sum() / (scene.train_labels > 0).sum()
    assert 0.1 < share < 0.5
    again, _ = hold_out_validation(scene, TrainSpec(validation=0.25, validation_block=BLOCK, seed=1))
    other, _ = hold_out_validation(scene, TrainSpec(validation=0.25, validation_block=BLOCK, seed=2))
    assert np.array_equal(again.train_labels, rest.train_labels) and not np.array_equal(other.train_labels, rest.train_labels)
    assert np.array_equal(rest.test_labels, scene.test_labels)  # the test labels are not touched


def test_the_model_ends_with_the_weights_that_scored_best_and_records_them(kept_best, tmp_path):
    record = kept_best.config.validation
    prepared = kept_best.prepared
    assert record.pixels == len(prepared.validation) > 0 and len(kept_best.prepared.train) > 0
    assert len(record.checks) == TrainSpec.validation_checks and record.steps_run == record.checks[-1][0]
    assert not record.stopped_early
    scores = [oa for _, oa in record.checks]
    assert record.best_oa == max(scores) and [s for s, oa in record.checks if oa == max(scores)][0] == record.best_step
    predicted = predict_pixels(kept_best.model, kept_best.sampler, prepared.validation, 256, None, "none")
    assert round(100 * float(np.mean(predicted == prepared.validation.targets)), 2) == record.best_oa
    path = tmp_path / "m.safetensors"
    save_model(kept_best.model, kept_best.config, path)
    assert read_config(path).validation == record
    described = CliRunner().invoke(info.main, [str(path)])
    assert f"best OA {record.best_oa:.2f} % at step {record.best_step} of {record.steps_run}" in described.output
    assert "sample" not in described.output  # these checks scored every held-out pixel
    assert record.share == len(prepared.validation) / (len(prepared.validation) + len(prepared.train))
    assert f"{record.pixels} held-out training pixels ({record.share:.0%} of the labels, --validation 0.25, blocks of" in described.output


def test_a_validation_split_larger_than_a_check_says_checks_score_a_sample_of_it():
    assert ValidationRecord(pixels=MAX_CHECK_PIXELS).sample_text() == ""
    sampled = ValidationRecord(pixels=MAX_CHECK_PIXELS + 1).sample_text()
    assert sampled == f" (each check scores a seeded sample of {MAX_CHECK_PIXELS} of them)"


def test_patience_stops_after_that_many_checks_without_gain(scene_dir):
    record = train_with(scene_dir, patience=2).config.validation
    assert record.stopped_early and record.steps_run == record.checks[-1][0]
    best_index = [step for step, _ in record.checks].index(record.best_step)
    assert len(record.checks) - 1 - best_index == 2
    assert all(oa <= record.best_oa for _, oa in record.checks[best_index + 1 :])


def test_bad_validation_settings_get_one_line(scene_dir, tmp_path):
    common = ["--scene", str(scene_dir), "--backbone", "tiny", "--patch-size", "6", "--token-size", "2", "--no-eval", "--quiet"]
    result = CliRunner().invoke(train.main, [*common, "--patience", "3", "-o", str(tmp_path / "a.safetensors")])
    assert result.exit_code == 1 and "needs a validation split" in result.output and not (tmp_path / "a.safetensors").exists()
    result = CliRunner().invoke(train.main, [*common, "--validation", "0.2", "--validation-block", "400", "-o", str(tmp_path / "b.safetensors")])
    assert result.exit_code == 1 and "too few or too clustered" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b.safetensors").exists()


def test_a_run_stopped_early_inside_its_first_epoch_writes_its_model_and_reports_its_loss(scene_dir, tmp_path):
    """Batches of 2 make the first epoch far longer than the step between checks; a learning rate too small
    to change a prediction leaves the validation OA flat, so --patience 1 stops the run at its second check."""
    model = tmp_path / "m.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "--backbone", "tiny", "--patch-size", "6", "--token-size", "2",
                                             "--expert-layers", "2", "--rank", "4", "--epochs", "2", "--min-steps", "0",
                                             "--batch-size", "2", "--lr", "1e-9", "--validation", "0.25", "--validation-block", str(BLOCK),
                                             "--patience", "1", "--no-eval", "--progress", "none", "-o", str(model)])
    assert result.exit_code == 0, result.output
    record = read_config(model).validation
    epoch = -(-(len(open_scene(scene_dir).train_labels.nonzero()[0]) - record.pixels) // 2)
    assert record.stopped_early and record.steps_run < epoch  # and its final loss was logged without an IndexError
