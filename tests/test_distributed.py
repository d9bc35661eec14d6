"""Under torchrun (gloo on CPU). Training: two processes share every batch, end with the same weights,
and train the model one process trains (up to the order of floating-point sums); only rank 0 writes.
Mapping: two processes share the blocks and write the map one process writes; a killed rank is
restarted without mapping finished blocks again; a rank that fails stops every rank with one message."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from mamol_cli import train
from mamol_core.data.rasters import write_raster
from mamol_core.data.scene import open_scene

#: The ranks' environment: one thread each; Python's fault handler prints every thread's stack should a
#: rank abort (a rare SIGABRT at exit has been seen, see docs/distributed.md).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
ARGS = ["--backbone", "tiny", "--patch-size", "6", "--token-size", "2", "--epochs", "2", "--min-steps", "0", "--batch-size", "32",
        "--expert-layers", "2", "--rank", "4", "--missing-rate", "0.5", "--device", "cpu", "--precision", "fp32", "--no-eval",
        "--progress", "none"]


def test_two_processes_train_the_model_one_process_trains(scene_dir, tmp_path):
    single = tmp_path / "single" / "model.safetensors"
    single.parent.mkdir()
    assert CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(single), *ARGS]).exit_code == 0
    out = tmp_path / "ddp" / "model.safetensors"
    out.parent.mkdir()
    env = ONE_THREAD
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
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ONE_THREAD,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0 and out.exists(), result.stderr[-3000:]


# Mapping under torchrun: blocks shared among ranks, kept across restarts, assembled by rank 0.

MAP_ARGS = ["--block-size", "12", "--precision", "fp32", "--device", "cpu", "--progress", "none"]
ROOT = os.path.dirname(os.path.dirname(__file__))


def torchrun(*args, restarts=0, processes=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "--max-restarts", str(restarts), *args]


def map_command(model, hsi, dsm, output, *extra):
    return ["-m", "mamol_cli.map", "--model", str(model), "--hsi", str(hsi), "--input", f"dsm={dsm}", "-o", str(output),
            *MAP_ARGS, *extra]


def read_all(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags()


def test_two_processes_map_what_one_process_maps(model_file, scene_dir, tmp_path):
    sides = ["--probabilities", "--confidence", "--availability"]
    one, two = tmp_path / "one" / "map.tif", tmp_path / "two" / "map.tif"
    one.parent.mkdir(), two.parent.mkdir()
    single = subprocess.run([sys.executable, *map_command(model_file, scene_dir / "hsi.tif", scene_dir / "dsm.tif", one, *sides)],
                            capture_output=True, text=True, timeout=120, env=ONE_THREAD, cwd=ROOT)
    assert single.returncode == 0, single.stderr[-3000:]
    result = subprocess.run(torchrun(*map_command(model_file, scene_dir / "hsi.tif", scene_dir / "dsm.tif", two, *sides)),
                            capture_output=True, text=True, timeout=300, env=ONE_THREAD, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchrun: 2 ranks share 16 blocks" in result.stderr and result.stderr.count("wrote ") == 1
    assert sorted(p.name for p in two.parent.iterdir()) == sorted(p.name for p in one.parent.iterdir())  # no block folder left
    for name in ("map.tif", "map_probabilities.tif", "map_confidence.tif", "map_availability.tif"):
        a, b = read_all(one.parent / name), read_all(two.parent / name)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2], name
    for name in ("map.qml", "map.tif.aux.xml"):
        assert (one.parent / name).read_text() == (two.parent / name).read_text()


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """Rank -> pid of torchrun's worker processes (Linux /proc)."""
    workers = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher.pid:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in item)
            workers[int(env["RANK"])] = int(entry.name)
        except (OSError, KeyError, ValueError):
            continue
    return workers


def test_a_killed_rank_is_restarted_and_finished_blocks_are_not_mapped_again(model_file, scene_dir, tmp_path):
    for name in ("hsi", "dsm"):  # a 200 x 200 scene: 289 blocks of 12 px
        with rasterio.open(scene_dir / f"{name}.tif") as src:
            write_raster(tmp_path / f"{name}.tif", np.tile(src.read(), (1, 5, 5)), src.transform, nodata=src.nodata)
    hsi, dsm = tmp_path / "hsi.tif", tmp_path / "dsm.tif"
    reference = tmp_path / "reference.tif"
    single = subprocess.run([sys.executable, *map_command(model_file, hsi, dsm, reference)], capture_output=True, text=True,
                            timeout=300, env=ONE_THREAD, cwd=ROOT)
    assert single.returncode == 0, single.stderr[-3000:]
    output = tmp_path / "map.tif"
    blocks = tmp_path / ".map.tif.blocks"
    launcher = subprocess.Popen(torchrun(*map_command(model_file, hsi, dsm, output), restarts=1), stderr=subprocess.PIPE, text=True,
                                env=ONE_THREAD, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(list(blocks.glob("block-*"))) < 10:
            assert launcher.poll() is None and time.monotonic() < deadline, "the map finished before a rank could be stopped"
            time.sleep(0.005)
        os.kill(worker_pids(launcher)[1], signal.SIGSTOP)  # rank 1 stops mid-map; rank 0 finishes its share and waits
        done = -1
        while len(list(blocks.glob("block-*"))) != done:
            done = len(list(blocks.glob("block-*")))
            time.sleep(1.0)
        os.kill(worker_pids(launcher)[1], signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, stderr[-3000:]
    assert 10 <= done < 289
    assert f"{done} finished blocks are kept in {blocks}" in stderr
    assert f"torchrun: 2 ranks share {289 - done} blocks ({done} of 289 blocks finished by an earlier run are kept, " in stderr
    assert np.array_equal(read_all(output)[0], read_all(reference)[0]) and not blocks.exists()


def test_a_rank_that_cannot_read_an_input_stops_every_rank_with_one_message(model_file, scene_dir, tmp_path):
    for rank in (0, 1):  # each rank runs in its own folder, as on nodes that mount different file systems
        (tmp_path / f"node{rank}").mkdir()
        shutil.copy(scene_dir / "hsi.tif", tmp_path / f"node{rank}" / "hsi.tif")
    shutil.copy(scene_dir / "dsm.tif", tmp_path / "node0" / "dsm.tif")  # node 1 lacks the DSM
    output = tmp_path / "out" / "map.tif"
    output.parent.mkdir()
    mapping = " ".join(map_command("MODEL", "hsi.tif", "dsm.tif", output)).replace("MODEL", str(model_file))
    script = f'cd "{tmp_path}/node$LOCAL_RANK" && PYTHONPATH="{ROOT}" exec "{sys.executable}" {mapping}'
    result = subprocess.run([*torchrun("--no-python", "sh", "-c", script)], capture_output=True, text=True, timeout=300,
                            env=ONE_THREAD, cwd=ROOT)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dsm.tif" in errors[0], result.stderr[-3000:]
    assert list(output.parent.iterdir()) == []


def test_an_unwritable_output_stops_every_rank_with_one_message(model_file, scene_dir, tmp_path):
    output = tmp_path / "missing-folder" / "map.tif"
    result = subprocess.run(torchrun(*map_command(model_file, scene_dir / "hsi.tif", scene_dir / "dsm.tif", output)),
                            capture_output=True, text=True, timeout=300, env=ONE_THREAD, cwd=ROOT)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_rank_that_cannot_read_an_input_stops_training_on_every_rank_with_one_message(scene_dir, tmp_path):
    for rank in (0, 1):  # each rank runs in its own folder, as on nodes that mount different file systems
        shutil.copytree(scene_dir, tmp_path / f"node{rank}")
    (tmp_path / "node1" / "dsm.tif").unlink()
    output = tmp_path / "out" / "model.safetensors"
    output.parent.mkdir()
    training = " ".join(["-m", "mamol_cli.train", "--scene", ".", "--input", "dsm=dsm.tif", "-o", str(output), *ARGS])
    script = f'cd "{tmp_path}/node$LOCAL_RANK" && PYTHONPATH="{ROOT}" exec "{sys.executable}" {training}'
    result = subprocess.run(torchrun("--no-python", "sh", "-c", script), capture_output=True, text=True, timeout=300,
                            env=ONE_THREAD, cwd=ROOT)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dsm.tif" in errors[0], result.stderr[-3000:]
    assert list(output.parent.iterdir()) == []
