"""Resumable training: a run interrupted by Ctrl-C or SIGTERM saves its state at the end of the step
under way and, resumed, ends with exactly the weights of a run that was never interrupted (CPU)."""

import logging
import os
import shlex
import shutil
import signal

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import edit_state
from mamol_cli import train
from mamol_core.modelfile.header import read_config
from mamol_core.progress import RecordProgress
from mamol_core.training import loop

FAST = ["--backbone", "tiny", "--patch-size", "6", "--token-size", "2", "--epochs", "3", "--min-steps", "0", "--batch-size", "32",
        "--expert-layers", "2", "--rank", "4", "--missing-rate", "0.5", "--device", "cpu", "--precision", "fp32", "--no-eval",
        "--save-every", "2", "--quiet"]


@pytest.fixture(autouse=True)
def every_step_reported(monkeypatch):
    """Progress records for every training step (not every 0.5 s), so a test can stop at a given step."""
    monkeypatch.setattr(loop, "counter", lambda total, desc, unit, mode: RecordProgress(total, desc, unit, mode, interval=0.0))


def train_run(scene_dir, out, *extra, stop_at=None, sig=signal.SIGINT, steps=None):
    """Run mamol-train on the scene (``stop_at``: send ``sig`` at that training step); the training
    steps its progress reported are appended to ``steps``."""
    def sink(record):
        if steps is not None and record.get("stage") == "training":
            steps.append(record.get("done"))
        if stop_at is not None and record.get("stage") == "training" and record.get("done") == stop_at:
            os.kill(os.getpid(), sig)

    return CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(out), *FAST, *extra], obj={"progress": sink})


@pytest.mark.parametrize("sig, code, extra", [(signal.SIGINT, 130, ()), (signal.SIGTERM, 143, ()),
                                              (signal.SIGINT, 130, ("--validation", "0.25", "--validation-block", "10"))],
                         ids=["sigint", "sigterm", "with-validation"])
def test_an_interrupted_and_resumed_run_ends_with_the_uninterrupted_weights(scene_dir, tmp_path, sig, code, extra):
    """With a validation split the resumed run also keeps the checks and the best weights seen before the stop."""
    straight = tmp_path / "straight.safetensors"
    assert train_run(scene_dir, straight, *extra).exit_code == 0
    assert not (tmp_path / "straight.state.safetensors").exists()  # removed once the model is written
    out = tmp_path / "resumed.safetensors"
    state = tmp_path / "resumed.state.safetensors"
    stopped = train_run(scene_dir, out, *extra, stop_at=5, sig=sig)
    assert stopped.exit_code == code and state.exists() and not out.exists(), stopped.output
    assert f"kept {state}" in stopped.output
    refused = train_run(scene_dir, out, *extra)
    assert refused.exit_code == 1 and "an interrupted run left its training state here" in refused.output
    other = train_run(scene_dir, out, *extra, "--resume", str(state), "--lr", "0.01")
    assert other.exit_code == 1 and "(differing: train.lr 0.002 then, 0.01 now)" in other.output, other.output
    resumed = train_run(scene_dir, out, *extra, "--resume", str(state))
    assert resumed.exit_code == 0, resumed.output
    a, b = load_file(str(straight)), load_file(str(out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_config(straight).validation == read_config(out).validation
    assert (read_config(out).validation is not None) == bool(extra)
    assert not state.exists()


def test_a_damaged_state_file_gets_one_line(scene_dir, tmp_path):
    broken = tmp_path / "broken.state.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    result = train_run(scene_dir, tmp_path / "m.safetensors", "--resume", str(broken))
    assert result.exit_code == 1 and "not a training state; pass the .state.safetensors file" in result.output
    out, state = tmp_path / "cut.safetensors", tmp_path / "cut.state.safetensors"
    assert train_run(scene_dir, out, stop_at=3).exit_code == 130
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a copy cut short
    cut = train_run(scene_dir, out, "--resume", str(state))
    assert cut.exit_code == 1 and "not a complete training state of this mamol; start afresh with --continue" in cut.output, cut.output

    missing = CliRunner().invoke(train.main, ["--scene", str(tmp_path / "no_scene"), "--resume", str(tmp_path / "gone.state.safetensors"),
                                              "-o", str(tmp_path / "m.safetensors")])
    assert missing.exit_code == 1 and "gone.state.safetensors: no such training state file" in missing.output  # before the scene is read


def test_a_state_from_another_release_resumes_with_new_settings_at_their_defaults(scene_dir, tmp_path):
    """A setting the state lacks counts as its default (how the older run behaved), another release
    does not matter; a setting this mamol does not know, or the new one at another value, differs."""
    straight = tmp_path / "straight.safetensors"
    assert train_run(scene_dir, straight).exit_code == 0
    out, state = tmp_path / "resumed.safetensors", tmp_path / "resumed.state.safetensors"
    assert train_run(scene_dir, out, stop_at=5).exit_code == 130

    def older(meta):
        del meta["config"]["train"]["rotation"]
        meta["config"]["train"].update(augment=True, dense_supervision=True)  # retired since, at the value mamol behaves as
        meta["config"]["mamol_version"] = "0.1.9"
        for modality in meta["config"]["model"]["modalities"]:
            del modality["unit"]  # recorded since, for warnings only

    edit_state(state, older)
    other = train_run(scene_dir, out, "--resume", str(state), "--rotation", "any")
    assert other.exit_code == 1 and "differing: train.rotation " in other.output and "\"any\" now" in other.output, other.output
    steps = []
    resumed = train_run(scene_dir, out, "--resume", str(state), steps=steps)
    assert resumed.exit_code == 0 and steps[0] == 5, resumed.output
    a, b = load_file(str(straight)), load_file(str(out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert train_run(scene_dir, out, stop_at=5).exit_code == 130 and state.exists()
    edit_state(state, lambda meta: meta["config"]["train"].update(mixup=0.5))  # a setting of a newer mamol
    newer = train_run(scene_dir, out, "--resume", str(state))
    assert newer.exit_code == 1 and "train.mixup" in newer.output
    edit_state(state, lambda meta: meta["config"]["train"].update(mixup=None, dense_supervision=False))  # a retired setting's other value
    switched = train_run(scene_dir, out, "--resume", str(state))
    assert switched.exit_code == 1 and "train.dense_supervision" in switched.output

    def before_format_4(meta):  # mamol 0.2.0 read every band's stored numbers
        meta["config"] |= {"format_version": 2, "mamol_version": "0.2.0"}
        for modality in meta["config"]["model"]["modalities"]:
            del modality["as_declared"]

    edit_state(state, before_format_4)
    older = train_run(scene_dir, out, "--resume", str(state))
    assert older.exit_code == 1 and "was written by mamol 0.2.0, which read the rasters' bands otherwise (model format 2, now 4); " \
        "start afresh with --continue instead of --resume" in older.output, older.output


def test_continue_goes_on_with_a_matching_state_and_replaces_another(scene_dir, tmp_path, caplog):
    """``--continue`` (the QGIS dialog's way): the same settings continue the stopped run to the
    uninterrupted weights; other settings start afresh over the stale state; with --resume it is refused."""
    straight = tmp_path / "straight.safetensors"
    assert train_run(scene_dir, straight).exit_code == 0
    out, state = tmp_path / "m.safetensors", tmp_path / "m.state.safetensors"
    stopped = train_run(scene_dir, out, "--continue", stop_at=5)
    assert stopped.exit_code == 130 and state.exists() and "saved to" in caplog.text and "run the same command again" in caplog.text
    both = train_run(scene_dir, out, "--continue", "--resume", str(state))
    assert both.exit_code == 1 and "give one of them" in both.output
    steps = []
    continued = train_run(scene_dir, out, "--continue", steps=steps)
    assert continued.exit_code == 0 and not state.exists() and steps[0] == 5, continued.output
    a, b = load_file(str(straight)), load_file(str(out))
    assert all(torch.equal(a[k], b[k]) for k in a)

    other = tmp_path / "other.safetensors"
    assert train_run(scene_dir, other, stop_at=5).exit_code == 130
    steps = []
    relearned = train_run(scene_dir, other, "--continue", "--lr", "0.01", steps=steps)
    assert relearned.exit_code == 0 and not (tmp_path / "other.state.safetensors").exists(), relearned.output
    assert steps[0] == 0  # started afresh


@pytest.mark.parametrize("extra", [("--continue",), ()])
def test_a_file_at_state_that_is_no_training_state_is_never_replaced(scene_dir, tmp_path, extra):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    result = train_run(scene_dir, tmp_path / "m.safetensors", "--state", str(notes), *extra)
    assert result.exit_code == 1 and "notes.txt: exists and is not a mamol training state" in result.output, result.output
    assert notes.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_continue_starts_afresh_over_a_training_state_cut_short(scene_dir, tmp_path):
    out, state = tmp_path / "m.safetensors", tmp_path / "m.state.safetensors"
    assert train_run(scene_dir, out, stop_at=3).exit_code == 130
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a copy cut short
    steps = []
    result = train_run(scene_dir, out, "--continue", steps=steps)
    assert result.exit_code == 0 and steps[0] == 0 and out.exists() and not state.exists(), result.output


def test_a_state_is_never_continued_on_other_training_labels(scene_dir, tmp_path):
    """The state records a digest of its training pixels: other classes on the same pixels (same rasters,
    same settings, same band statistics) are refused with --resume and start afresh with --continue."""
    out, state = tmp_path / "m.safetensors", tmp_path / "m.state.safetensors"
    assert train_run(scene_dir, out, stop_at=5).exit_code == 130
    edited = tmp_path / "edited"
    shutil.copytree(scene_dir, edited)
    with rasterio.open(edited / "train_labels.tif", "r+") as labels:
        values = labels.read(1)
        rows, cols = np.nonzero(values)
        first = values[rows[0], cols[0]]
        changed = [i for i in range(len(rows)) if values[rows[i], cols[i]] != first][:5]
        values[rows[changed], cols[changed]] = first  # five pixels of other classes now of the first pixel's class
        labels.write(values, 1)
    refused = train_run(edited, out, "--resume", str(state))
    assert refused.exit_code == 1 and "(differing: the training labels or their sensor masks (the labels' file, those --holdout" in refused.output
    steps = []
    assert train_run(edited, out, "--continue", steps=steps).exit_code == 0 and steps[0] == 0 and not state.exists()


def test_a_run_stopped_early_before_the_interruption_stays_stopped(scene_dir, tmp_path):
    """A state whose validation checks had already called for an early stop (Ctrl-C during that check)
    ends the run at once when resumed, as the uninterrupted run ended there."""
    extra = ("--validation", "0.25", "--validation-block", "10", "--patience", "2")
    out, state = tmp_path / "m.safetensors", tmp_path / "m.state.safetensors"
    assert train_run(scene_dir, out, *extra, stop_at=5).exit_code == 130
    edit_state(state, lambda meta: meta["validation"].update(stale=2))
    steps = []
    resumed = train_run(scene_dir, out, *extra, "--resume", str(state), steps=steps)
    assert resumed.exit_code == 0 and steps == [5], (resumed.output, steps)
    record = read_config(out).validation
    assert record.steps_run == 5 and record.stopped_early


def test_a_run_interrupted_at_the_check_that_stops_it_ends_with_the_uninterrupted_loss(scene_dir, tmp_path, caplog):
    """Ctrl-C at the step whose validation check stops the run inside an epoch (batches of 2, a learning rate
    too small to change a prediction, patience 1): the state keeps that epoch's loss so far, so the resumed
    run reports the final loss of the run never interrupted."""
    caplog.set_level(logging.INFO)
    extra = ("--batch-size", "2", "--lr", "1e-9", "--validation", "0.25", "--validation-block", "10", "--patience", "1")
    straight = tmp_path / "straight.safetensors"
    assert train_run(scene_dir, straight, *extra).exit_code == 0
    record = read_config(straight).validation
    assert record.stopped_early
    expected = caplog.text.split("final loss ")[1].split(")")[0]
    caplog.clear()
    out = tmp_path / "resumed.safetensors"
    assert train_run(scene_dir, out, *extra, stop_at=record.steps_run).exit_code == 130
    assert train_run(scene_dir, out, *extra, "--resume", str(tmp_path / "resumed.state.safetensors")).exit_code == 0
    assert caplog.text.split("final loss ")[1].split(")")[0] == expected and read_config(out).validation == record


def test_a_run_stopped_while_scoring_keeps_the_model_and_says_how_to_score_it(scene_dir, tmp_path, monkeypatch, caplog):
    from mamol_cli import evaluate
    from mamol_core.evaluation import score

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(score, "evaluate_run", stopped)
    scene = tmp_path / "scene"
    shutil.copytree(scene_dir, scene)
    (scene / "gt.tif").write_bytes((scene / "train_labels.tif").read_bytes())  # a label raster among the sensors, given as --labels
    out = tmp_path / "m.safetensors"
    args = ["--scene", str(scene), "--labels", str(scene / "gt.tif"), "--test-labels", str(scene / "test_labels.tif"), "-o", str(out),
            *[a for a in FAST if a != "--no-eval"]]
    result = CliRunner().invoke(train.main, args, obj={"progress": lambda record: None})
    assert result.exit_code == 130 and f"kept {out}" in result.output and out.exists(), result.output
    assert not (tmp_path / "m.report").exists()
    hint = caplog.text.split("no accuracy report; ")[1].split(" writes it")[0]
    words = shlex.split(hint)
    assert words[:3] == ["mamol-eval", "--model", str(out)] and words[-2:] == ["-o", str(tmp_path / "m.report")]
    scored = CliRunner().invoke(evaluate.main, [*words[1:], "--quiet"])
    assert scored.exit_code == 0 and (tmp_path / "m.report" / "metrics.json").exists(), scored.output

    held_out = train.evaluation_hint(out, tmp_path / "r", {"a": tmp_path / "x.tif"}, None, scene_dir / "train_labels.gpkg", None,
                                     "code", None)
    assert "train again" in held_out
