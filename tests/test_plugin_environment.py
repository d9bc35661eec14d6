"""The QGIS plugin's runner, without QGIS: subprocess and in-process runs, progress, errors, cancel."""

import sys
import time
from pathlib import Path

import pytest

from mamol_core import __version__
from qgis_plugin.environment import Canceled, CommandFailed, MamolNotFound, find_tool, model_info, run_command

BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def model(scene_dir, tmp_path_factory):
    from click.testing import CliRunner

    from mamol_cli import train

    out = tmp_path_factory.mktemp("plugin") / "model.safetensors"
    result = CliRunner().invoke(train.main, ["--scene", str(scene_dir), "-o", str(out), "--backbone", "tiny", "--patch-size", "6", "--token-size", "2",
                                             "--epochs", "2", "--min-steps", "0", "--expert-layers", "2", "--device", "cpu", "--progress", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def map_args(model, scene_dir, out):
    return ["--model", str(model), "--input", f"hsi={scene_dir / 'hsi.tif'}", "--input", f"dsm={scene_dir / 'dsm.tif'}",
            "-o", str(out), "--device", "cpu"]


def test_finds_the_configured_executables():
    assert find_tool("mamol-map", BIN) == str(Path(BIN) / "mamol-map")
    assert find_tool("mamol-map", "/nonexistent") is None


def test_model_info_through_mamol_info(model):
    info = model_info(str(model), BIN)
    assert [m["name"] for m in info["model"]["modalities"]] == ["dsm", "hsi"]
    with pytest.raises(CommandFailed, match="not a mamol model"):
        model_info(__file__, BIN)


@pytest.mark.parametrize("bin_dir", [BIN, "/nonexistent-so-in-process"])
def test_map_runs_with_progress(model, scene_dir, tmp_path, bin_dir):
    records, logs = [], []
    run_command("mamol-map", map_args(model, scene_dir, tmp_path / "m.tif"), bin_dir, records.append, lambda: False, logs.append)
    assert (tmp_path / "m.tif").is_file() and records[-1]["percent"] == 100.0 and records[-1]["stage"] == "mapping"


@pytest.mark.parametrize("bin_dir", [BIN, "/nonexistent-so-in-process"])
def test_eval_runs_with_progress(model, scene_dir, tmp_path, bin_dir):
    records = []
    args = ["--model", str(model), "--input", f"dsm={scene_dir / 'dsm.tif'}", "--labels", str(scene_dir / "test_labels.tif"), "-o",
            str(tmp_path / "report"), "--device", "cpu"]
    run_command("mamol-eval", args, bin_dir, records.append, lambda: False, lambda line: None)
    assert (tmp_path / "report" / "report.html").is_file() and records and records[-1]["percent"] == 100.0


@pytest.mark.parametrize("bin_dir", [BIN, "/nonexistent-so-in-process"])
def test_warnings_arrive_marked_as_warnings(model, scene_dir, tmp_path, bin_dir):
    import numpy as np
    import rasterio

    with rasterio.open(scene_dir / "hsi.tif") as src:
        profile, cube = src.profile, src.read()
    with rasterio.open(tmp_path / "hsi.tif", "w", **{**profile, "dtype": "float32"}) as dst:
        dst.write(cube.astype(np.float32) * 10_000)
    logs = []
    args = ["--model", str(model), "--input", f"hsi={tmp_path / 'hsi.tif'}", "-o", str(tmp_path / "m.tif"), "--device", "cpu"]
    run_command("mamol-map", args, bin_dir, lambda r: None, lambda: False, logs.append)
    assert [line for line in logs if line.startswith(f"warning: {tmp_path / 'hsi.tif'}: its hsi values look unlike")], logs


def test_errors_arrive_as_one_line(model, tmp_path):
    with pytest.raises(CommandFailed) as error:
        run_command("mamol-map", ["--model", str(model), "--input", "sar=/nowhere.tif", "-o", str(tmp_path / "x.tif")], BIN,
                    lambda r: None, lambda: False, lambda line: None)
    assert str(error.value) == "/nowhere.tif: the model knows no modality 'sar'; it expects dsm, hsi (give it under the name of the sensor it " \
                                 "holds: --input NAME=/nowhere.tif, NAME one of dsm, hsi)"


@pytest.mark.parametrize("bin_dir", [BIN, "/nonexistent-so-in-process"])
def test_cancel_stops_and_leaves_nothing(model, scene_dir, tmp_path, bin_dir):
    import numpy as np
    from affine import Affine

    from mamol_core.data.rasters import write_raster

    write_raster(tmp_path / "dsm.tif", np.random.default_rng(0).normal(200, 5, (1, 1000, 1000)).astype(np.float32),
                 Affine(2, 0, 664000, 0, -2, 5104000))
    records = []
    args = ["--model", str(model), "--input", f"dsm={tmp_path / 'dsm.tif'}", "-o", str(tmp_path / "m.tif"), "--device", "cpu",
            "--block-size", "128"]
    some_blocks_done = lambda: bool(records) and records[-1]["done"] > 0.1 * records[-1]["total"]  # noqa: E731
    with pytest.raises(Canceled):
        run_command("mamol-map", args, bin_dir, records.append, some_blocks_done, lambda line: None)
    assert records and records[-1]["done"] < records[-1]["total"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dsm.tif"]  # no output, and no finished blocks kept


def test_a_cancel_removes_what_a_killed_map_leaves_beside_its_output(tmp_path):
    from qgis_plugin.environment import remove_block_folders

    (tmp_path / ".m.tif.blocks").mkdir()
    (tmp_path / ".m.tif.blocks" / "block-0000000.safetensors").write_bytes(b"done")
    (tmp_path / ".m.tif.blocks.lock").write_text("12345")  # a killed run never removes its lock file
    (tmp_path / ".other.tif.blocks").mkdir()  # another map's blocks stay
    (tmp_path / ".busy.tif.blocks").mkdir()  # and those of a run into the same output that is not the cancelled one
    (tmp_path / ".busy.tif.blocks.lock").write_text("777")
    for output in ("m.tif", "busy.tif"):
        remove_block_folders(["--model", "x.safetensors", "-o", str(tmp_path / output), "--device", "cpu"], {12345})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.tif.blocks", ".busy.tif.blocks.lock", ".other.tif.blocks"]


def test_the_logged_command_can_be_pasted_into_a_shell():
    import shlex

    from qgis_plugin.environment import command_line

    parts = ["mamol-map", "--input", "hsi=/data/my scenes/hsi (v2).tif", "-o", "/maps/it's here.tif", "--device", "cpu"]
    assert shlex.split(command_line(parts)) == parts and command_line(["mamol-map", "--quiet"]) == "mamol-map --quiet"


def test_not_found_explains_the_fix(monkeypatch):
    import qgis_plugin.environment as environment

    monkeypatch.setattr(environment, "imports_in_process", lambda: False)
    with pytest.raises(MamolNotFound, match="find or create its environment with Raster > MaMOL > Set up mamol environment…"):
        run_command("mamol-map", [], "/nonexistent", lambda r: None, lambda: False, lambda line: None)


def fake_tool(folder: Path, script: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "mamol-map"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    return str(folder)


def test_the_environment_is_checked_by_running_mamol_map_version(tmp_path):
    from qgis_plugin.environment import tool_version

    assert tool_version(BIN) == f"mamol-map, version {__version__}"
    broken = fake_tool(tmp_path / "broken", "echo 'ModuleNotFoundError: No module named torch' >&2; exit 1")
    with pytest.raises(CommandFailed, match="does not run \\(ModuleNotFoundError: No module named torch\\); create a new environment"):
        tool_version(broken)
    with pytest.raises(MamolNotFound):
        tool_version(str(tmp_path / "nothing"))


def test_qgis_s_own_python_proj_and_gdal_settings_do_not_reach_mamol(model, tmp_path, monkeypatch):
    """OSGeo4W's QGIS sets PYTHONHOME and PROJ/GDAL folders for itself: inherited, mamol's Python would not start."""
    from qgis_plugin.environment import tool_version

    for name, value in [("PYTHONHOME", str(tmp_path / "qgis-python")), ("PYTHONPATH", str(tmp_path)), ("PROJ_DATA", str(tmp_path)),
                        ("GDAL_DRIVER_PATH", str(tmp_path))]:
        monkeypatch.setenv(name, value)
    assert tool_version(BIN) == f"mamol-map, version {__version__}"
    assert model_info(model, BIN)["model"]["modalities"]


def test_an_environment_of_another_mamol_release_is_refused_with_the_fix(tmp_path, monkeypatch):
    import re

    import mamol_core
    from qgis_plugin.environment import environment_problem, plugin_version

    project = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert plugin_version() == mamol_core.__version__ == re.search(r'^version = "(.+)"$', project, re.M).group(1)  # one release
    assert environment_problem(BIN) is None
    older = fake_tool(tmp_path / "older", "echo 'mamol-map, version 0.1.0'")
    assert environment_problem(older) == (f"{older}/mamol-map is mamol 0.1.0, but this plugin drives mamol {plugin_version()}; "
                                          "install the plugin's own with Raster > MaMOL > Set up mamol environment… (Create)")
    empty = tmp_path / "empty"
    empty.mkdir()  # no mamol-map there: the mamol this Python imports runs in-process, and is checked too
    assert environment_problem(str(empty)) is None
    monkeypatch.setattr(mamol_core, "__version__", "0.1.0")
    assert environment_problem(str(empty)).startswith("the mamol that QGIS's Python imports is mamol 0.1.0, but this plugin drives ")


def test_environments_are_found_where_they_are_configured_created_or_on_path(tmp_path, monkeypatch):
    import qgis_plugin.environment as environment

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MAMOL_BIN_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert environment.default_environment() == tmp_path / "data" / "mamol" / "env"
    assert environment.find_environments(None) == []
    created = fake_tool(environment.environment_bin(environment.default_environment()), "echo mamol-map, version 0")
    assert environment.find_environments(BIN) == [str(Path(BIN).resolve()), str(Path(created).resolve())]


def test_creating_an_environment_that_fails_or_is_cancelled_leaves_nothing(tmp_path):
    from qgis_plugin.environment import create_environment

    lines = []
    folder = tmp_path / "env"
    with pytest.raises(CommandFailed, match="installing mamol and its dependencies failed: ERROR: No matching distribution found for mamol-that-does-not-exist"):
        create_environment(folder, ["--no-index", "mamol-that-does-not-exist"], lines.append, lambda: False)
    assert not folder.exists() and lines[0].startswith("creating the environment: ")
    assert any(line.startswith("installing mamol and its dependencies") for line in lines)
    with pytest.raises(Canceled):
        create_environment(folder, ["--no-index", "mamol"], lines.append, lambda: True)
    assert not folder.exists()


def test_an_environment_whose_mamol_does_not_run_is_kept_and_explained(tmp_path):
    import subprocess

    from qgis_plugin.environment import create_environment

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(wheels),
                    str(Path(__file__).resolve().parents[1])], check=True, capture_output=True)
    wheel = next(wheels.glob("mamol-*.whl"))
    folder = tmp_path / "env"
    with pytest.raises(CommandFailed, match="mamol-map does not run .*No module named"):  # installed without its dependencies
        create_environment(folder, ["--no-deps", "--no-index", str(wheel)], lambda line: None, lambda: False)
    assert (folder / "bin" / "mamol-map").is_file()


STUBBORN = """
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # busy past the grace period, as a mapping on a loaded machine
out = sys.argv[sys.argv.index("-o") + 1]
folder, name = os.path.split(out)
stem, suffix = os.path.splitext(name)
open(os.path.join(folder, f".{stem}.partial-{os.getpid()}{suffix}"), "w").write("half")
print(json.dumps({"stage": "mapping", "done": 1, "total": 9, "pid": os.getpid()}), flush=True)
time.sleep(60)
"""


LAUNCHER = """
import signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a launcher (as Windows' mamol-map.exe) that waits for the Python it starts
subprocess.call([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
"""


@pytest.mark.parametrize("launched", [False, True], ids=["direct", "through a launcher"])
def test_a_command_killed_after_the_grace_period_leaves_no_partial_file(tmp_path, launched):
    from qgis_plugin.environment import _run_subprocess

    (tmp_path / "input.tif").write_text("input")
    (tmp_path / ".other.partial-1.tif").write_text("another process's")  # not the killed command's: kept
    records = []
    program = [sys.executable, "-c", LAUNCHER, STUBBORN] if launched else [sys.executable, "-c", STUBBORN]
    with pytest.raises(Canceled, match="no output was written"):
        _run_subprocess([*program, "--input", f"dsm={tmp_path / 'input.tif'}", "-o", str(tmp_path / "map.tif")],
                        records.append, lambda: bool(records), lambda line: None, grace=0.5)
    assert records and sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-1.tif", "input.tif"]
    assert not runs(records[0]["pid"])  # the writer was killed too, not only the process started


def runs(pid: int) -> bool:
    """Whether process ``pid`` still runs (Linux: a zombie waiting for its reaper does not), waiting up to 5 s for it to end."""
    for _ in range(100):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except (FileNotFoundError, ProcessLookupError):
            return False
        time.sleep(0.05)
    return True
