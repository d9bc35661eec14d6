"""Readers for Houston2013, Trento and Augsburg in their shared .mat layouts (v5 and v7.3), on small
files written here in those layouts."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy.io import savemat

from mamol_core.bench.paper_data import prepare_dataset, read_mat
from mamol_core.data.scene import open_scene
from mamol_core.errors import MamolError

H, W = 12, 15


def save_v73(path, name, array):
    """A MATLAB v7.3 file: HDF5 with the 512-byte MATLAB header and column-major (transposed) data."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset(name, data=np.asarray(array).T)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sun Nov 22 12:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def labels(classes, seed):
    rng = np.random.default_rng(seed)
    train = np.zeros((H, W), np.uint8)
    test = np.zeros((H, W), np.uint8)
    cells = rng.permutation(H * W)
    for c in range(1, classes + 1):
        train.flat[cells[3 * (c - 1): 3 * c]] = c
        test.flat[cells[60 + 5 * (c - 1): 60 + 5 * c]] = c
    return train, test


def test_houston_v5_layout(tmp_path):
    rng = np.random.default_rng(0)
    hsi = rng.random((H, W, 144)).astype(np.float32)
    train, test = labels(15, 0)
    savemat(tmp_path / "HSI.mat", {"HSI": hsi})
    savemat(tmp_path / "LiDAR.mat", {"LiDAR": rng.random((H, W))})
    savemat(tmp_path / "TRLabel.mat", {"TRLabel": train})
    savemat(tmp_path / "TSLabel.mat", {"TSLabel": test})
    out = prepare_dataset("Houston2013", tmp_path, tmp_path / "scene")
    with rasterio.open(out / "hsi.tif") as src:
        assert src.count == 144 and src.shape == (H, W)
        assert np.allclose(src.read(7), hsi[:, :, 6])
    scene = open_scene(out)
    assert scene.names == ["hsi", "lidar"] and np.array_equal(scene.train_labels, train)
    assert json.loads((out / "classes.json").read_text())["15"]["name"] == "Running track"


def test_augsburg_v73_layout_with_three_modalities(tmp_path):
    rng = np.random.default_rng(1)
    hsi, sar, dsm = rng.random((H, W, 180)), rng.random((H, W, 4)), rng.random((H, W))
    train, test = labels(7, 1)
    for name, array in (("data_HS_LR", hsi), ("data_SAR_HR", sar), ("data_DSM", dsm), ("TrainImage", train), ("TestImage", test)):
        save_v73(tmp_path / f"{name}.mat", name, array)
    with pytest.raises(NotImplementedError):
        from scipy.io import loadmat

        loadmat(tmp_path / "data_DSM.mat")
    assert np.allclose(read_mat(tmp_path / "data_SAR_HR.mat", "data_SAR_HR"), sar)
    scene = open_scene(prepare_dataset("augsburg", tmp_path, tmp_path / "scene"))
    assert scene.names == ["dsm", "hsi", "sar"] and [m.bands for m in scene.modalities] == [1, 180, 4]
    assert np.array_equal(scene.test_labels, test)


def test_trento_from_a_ground_truth_map_draws_the_usual_training_counts(tmp_path):
    rng = np.random.default_rng(2)
    gt = rng.integers(1, 7, (40, 50)).astype(np.uint8)
    savemat(tmp_path / "HSI_Trento.mat", {"hsi_trento": rng.random((40, 50, 63))})
    savemat(tmp_path / "Lidar_Trento.mat", {"lidar_trento": rng.random((40, 50))})
    savemat(tmp_path / "GT_Trento.mat", {"gt_trento": gt})
    scene = open_scene(prepare_dataset("trento", tmp_path, tmp_path / "scene", seed=3))
    counts = [int((scene.train_labels == c).sum()) for c in range(1, 7)]
    assert counts == [129, 125, 105, 154, 184, 122]
    assert np.array_equal(scene.train_labels + scene.test_labels, gt)


def test_missing_files_and_overrides(tmp_path):
    with pytest.raises(MamolError, match="no train found .*pass --var train=FILE:VARIABLE"):
        prepare_dataset("houston2013", tmp_path, tmp_path / "scene")
    rng = np.random.default_rng(3)
    train, test = labels(15, 3)
    savemat(tmp_path / "cube.mat", {"data": rng.random((H, W, 144))})
    savemat(tmp_path / "LiDAR.mat", {"LiDAR": rng.random((H + 1, W))})
    savemat(tmp_path / "TRLabel.mat", {"TRLabel": train})
    savemat(tmp_path / "TSLabel.mat", {"TSLabel": test})
    with pytest.raises(MamolError, match="lidar: 13x15 pixels, but the labels are 12x15"):
        prepare_dataset("houston2013", tmp_path, tmp_path / "scene", overrides={"hsi": "cube.mat:data"})
    assert not (tmp_path / "scene").exists() and not list(tmp_path.glob(".scene*"))  # nothing half-written
    with pytest.raises(MamolError, match="unknown dataset 'pavia'"):
        prepare_dataset("pavia", tmp_path, tmp_path / "scene")


def test_a_scene_is_never_written_over_files_and_a_damaged_mat_file_gets_one_line(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    train, test = labels(15, 4)
    savemat(tmp_path / "HSI.mat", {"HSI": rng.random((H, W, 144)).astype(np.float32)})
    savemat(tmp_path / "LiDAR.mat", {"LiDAR": rng.random((H, W))})
    savemat(tmp_path / "TRLabel.mat", {"TRLabel": train})
    savemat(tmp_path / "TSLabel.mat", {"TSLabel": test})
    scene = tmp_path / "scene"
    scene.mkdir()
    monkeypatch.chdir(scene)
    prepare_dataset("houston2013", tmp_path, Path("."))  # an empty folder is filled, also as "."
    before = {path: path.read_bytes() for path in scene.iterdir()}
    with pytest.raises(MamolError, match="scene: already holds files; give a new or empty folder"):
        prepare_dataset("houston2013", tmp_path, scene, seed=1)
    with pytest.raises(MamolError, match="already holds files"):
        prepare_dataset("houston2013", tmp_path, tmp_path)  # the source itself
    assert {path: path.read_bytes() for path in scene.iterdir()} == before
    (tmp_path / "LiDAR.mat").write_bytes((tmp_path / "LiDAR.mat").read_bytes()[:200])
    with pytest.raises(MamolError, match="LiDAR.mat: not a readable MATLAB file"):
        prepare_dataset("houston2013", tmp_path, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_damaged_label_or_v73_file_is_named_not_replaced_by_a_drawn_split(tmp_path):
    rng = np.random.default_rng(5)
    gt = rng.integers(1, 7, (40, 50)).astype(np.uint8)
    savemat(tmp_path / "HSI_Trento.mat", {"hsi_trento": rng.random((40, 50, 63))})
    savemat(tmp_path / "GT_Trento.mat", {"gt_trento": gt})
    savemat(tmp_path / "TSLabel.mat", {"TSLabel": gt})
    (tmp_path / "TRLabel.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 20)  # damaged: the ground truth must not stand in
    save_v73(tmp_path / "Lidar_Trento.mat", "lidar_trento", rng.random((40, 50)))
    with pytest.raises(MamolError, match="TRLabel.mat: not a readable MATLAB file"):
        prepare_dataset("trento", tmp_path, tmp_path / "scene")
    (tmp_path / "TRLabel.mat").unlink()
    (tmp_path / "TSLabel.mat").unlink()
    data = (tmp_path / "Lidar_Trento.mat").read_bytes()
    (tmp_path / "Lidar_Trento.mat").write_bytes(data[: len(data) // 2])  # a v7.3 (HDF5) file cut short
    with pytest.raises(MamolError, match="Lidar_Trento.mat: not a readable MATLAB file"):
        prepare_dataset("trento", tmp_path, tmp_path / "scene")
    assert not (tmp_path / "scene").exists()
