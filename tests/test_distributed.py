"""Training under torchrun (gloo on CPU): two processes share every batch, end with the same weights,
and train the model one process trains (up to the order of floating-point sums); only rank 0 writes."""

import os
import subprocess
import sys

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from mamol_cli import train
from mamol_core.data.scene import open_scene

ARGS = ["--backbone", "tiny", "--patch-size", "6", "--token-size", "2", "--epochs", "2", "--min-steps", "0", "--batch-size", "32",
        "--expert-layers", "2", "--rank", "4", "--missing-rate", "0.5", "--device", "cpu", "--precision", "fp32", "--no-eval",
        "--progress", "none"]


def test_two_processes_train_the_model_one_process_trains(scene_dir, tmp_path):
    single = tmp_path / "single" / "model.safetensors"
    single.parent.mkdir()
    assert CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(single), *ARGS]).exit_code == 0
    out = tmp_path / "ddp" / "model.safetensors"
    out.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mamol_cli.train", "--scene", str(scene_dir), "-o", str(out), *ARGS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchrun: 2 processes, each takes 1/2 of every batch of 32" in result.stderr
    assert result.stderr.count("model written to") == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.safetensors"]
    a, b = load_file(str(single)), load_file(str(out))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)


def test_a_rank_left_without_samples_in_the_last_batch_takes_part_with_weight_zero(scene_dir, tmp_path):
    pixels = int((open_scene(scene_dir).train_labels > 0).sum())
    out = tmp_path / "model.safetensors"
    args = [a if a != "32" else str(pixels - 1) for a in ARGS]  # the last batch of each epoch holds one sample
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mamol_cli.train", "--scene", str(scene_dir), "-o", str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0 and out.exists(), result.stderr[-3000:]
