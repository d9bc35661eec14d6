"""Readers for the paper's benchmark datasets in the layouts the community shares, turned into scenes.

Houston2013 (HSI 144 bands + LiDAR, 15 classes), Trento (HSI 63 bands + LiDAR, 6 classes) and
Augsburg (HSI 180 bands + SAR 4 bands + DSM, 7 classes) circulate as MATLAB files, v5 (read with
scipy) or v7.3 (HDF5, read with h5py, whose arrays come transposed), with a handful of usual file
and variable names. Each modality is written as a GeoTIFF with a nominal georeference (EPSG:32632,
1 m pixels, as the source files carry none), the splits as label rasters, and the class names in
``classes.json``. Where a distribution ships only a ground-truth map (Trento's ``GT_Trento.mat``),
the training pixels are drawn per class in the usual counts (seeded) and the rest is the test set.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from mamol_core.atomic import check_folder
from mamol_core.data.labels import PALETTE
from mamol_core.data.rasters import write_raster
from mamol_core.errors import MamolError

#: Nominal grid of the written scenes: the source files carry no georeference.
NOMINAL_CRS = "EPSG:32632"
NOMINAL_TRANSFORM = Affine(1.0, 0.0, 600000.0, 0.0, -1.0, 5000000.0)

Candidates = list[tuple[str, str]]


@dataclass(frozen=True)
class Layout:
    """Where a dataset's arrays are usually found: (file, variable) candidates per modality and split."""

    modalities: dict[str, Candidates]
    train: Candidates
    test: Candidates
    classes: list[str]
    ground_truth: Candidates = field(default_factory=list)
    train_counts: tuple[int, ...] = ()


LAYOUTS: dict[str, Layout] = {
    "houston2013": Layout(
        modalities={"hsi": [("HSI.mat", "HSI"), ("Houston.mat", "HSI"), ("houston_hsi.mat", "houston_hsi")],
                    "lidar": [("LiDAR.mat", "LiDAR"), ("LiDAR.mat", "LIDAR"), ("houston_lidar.mat", "houston_lidar")]},
        train=[("TRLabel.mat", "TRLabel"), ("TrainImage.mat", "TrainImage")],
        test=[("TSLabel.mat", "TSLabel"), ("TestImage.mat", "TestImage")],
        classes=["Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water", "Residential",
                 "Commercial", "Road", "Highway", "Railway", "Parking lot 1", "Parking lot 2", "Tennis court", "Running track"]),
    "trento": Layout(
        modalities={"hsi": [("HSI.mat", "HSI"), ("HSI_Trento.mat", "hsi_trento"), ("Trento.mat", "HSI")],
                    "lidar": [("LiDAR.mat", "LiDAR"), ("Lidar_Trento.mat", "lidar_trento"), ("Lidar1_Trento.mat", "lidar1_trento")]},
        train=[("TRLabel.mat", "TRLabel"), ("TrainImage.mat", "TrainImage")],
        test=[("TSLabel.mat", "TSLabel"), ("TestImage.mat", "TestImage")],
        classes=["Apple trees", "Buildings", "Ground", "Woods", "Vineyard", "Roads"],
        ground_truth=[("GT_Trento.mat", "gt_trento")],
        train_counts=(129, 125, 105, 154, 184, 122)),
    "augsburg": Layout(
        modalities={"hsi": [("data_HS_LR.mat", "data_HS_LR"), ("HSI.mat", "HSI")],
                    "sar": [("data_SAR_HR.mat", "data_SAR_HR"), ("SAR.mat", "SAR")],
                    "dsm": [("data_DSM.mat", "data_DSM"), ("DSM.mat", "DSM"), ("LiDAR.mat", "LiDAR")]},
        train=[("TrainImage.mat", "TrainImage"), ("TRLabel.mat", "TRLabel")],
        test=[("TestImage.mat", "TestImage"), ("TSLabel.mat", "TSLabel")],
        classes=["Forest", "Residential area", "Industrial area", "Low plants", "Allotment", "Commercial area", "Water"]),
}


class MissingArray(MamolError):
    """An array that is not where it was looked for: no such variable in a ``.mat`` file, or no candidate
    file holds it (a damaged file is a plain :class:`MamolError`, never taken for an absent array)."""


def read_mat_v73(path: Path, variable: str) -> np.ndarray:
    """One variable of a MATLAB v7.3 file (HDF5, read with h5py and transposed back to MATLAB's order)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if variable not in handle:
                raise MissingArray(f"{path}: has no variable {variable!r}; it holds {', '.join(k for k in handle if not k.startswith('#'))}")
            return np.asarray(handle[variable]).T
    except (OSError, ValueError, KeyError) as exc:  # a truncated or damaged HDF5 file
        raise MamolError(f"{path}: not a readable MATLAB file ({exc}); re-download it") from None


def read_mat(path: Path, variable: str) -> np.ndarray:
    """One variable of a MATLAB file, v5 (scipy) or v7.3 (HDF5 via h5py, transposed back)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path, variable_names=[variable])
    except NotImplementedError:
        return read_mat_v73(path, variable)
    except (ValueError, OSError, MatReadError, IndexError, TypeError, EOFError) as exc:  # what scipy raises on damaged bytes
        raise MamolError(f"{path}: not a readable MATLAB file ({exc}); re-download it") from None
    if variable not in content:
        raise MissingArray(f"{path}: has no variable {variable!r}")
    return np.asarray(content[variable])


def find_array(folder: Path, candidates: Candidates, what: str, overrides: dict[str, str]) -> np.ndarray:
    """The first candidate (file, variable) present in ``folder``; ``overrides[what]`` = ``file:variable`` wins."""
    if what in overrides:
        file, _, variable = overrides[what].partition(":")
        return read_mat(folder / file, variable or Path(file).stem)
    for file, variable in candidates:
        path = folder / file
        if path.is_file():
            try:
                return read_mat(path, variable)
            except MissingArray:  # not this variable: the next candidate may be in the same file
                continue
    names = ", ".join(f"{f}:{v}" for f, v in candidates)
    raise MissingArray(f"{folder}: no {what} found (looked for {names}); pass --var {what}=FILE:VARIABLE")


def split_ground_truth(labels: np.ndarray, counts: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[c-1]`` training pixels of each class ``c`` (seeded); the rest is the test set."""
    rng = np.random.default_rng(seed)
    train = np.zeros_like(labels)
    for value, count in enumerate(counts, start=1):
        rows, cols = np.nonzero(labels == value)
        if len(rows) < count:
            raise MamolError(f"ground truth has {len(rows)} pixels of class {value}, fewer than the {count} training pixels drawn")
        chosen = rng.choice(len(rows), size=count, replace=False)
        train[rows[chosen], cols[chosen]] = value
    return train, np.where(train > 0, 0, labels)


def as_bands(array: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` or ``[H, W, B]`` MATLAB order -> ``[B, H, W]`` float32, checked against the label grid."""
    array = np.asarray(array, np.float32)
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    if array.shape[1:] != shape:
        raise MamolError(f"{name}: {array.shape[1]}x{array.shape[2]} pixels, but the labels are {shape[0]}x{shape[1]}; "
                         f"the files do not belong together")
    return array


def prepare_dataset(dataset: str, source: Path, out: Path, overrides: dict[str, str] | None = None, seed: int = 0) -> Path:
    """Write a scene folder for ``dataset`` from its ``.mat`` files in ``source``; returns ``out``."""
    key = dataset.lower()
    if key not in LAYOUTS:
        raise MamolError(f"unknown dataset {dataset!r}; choose one of {', '.join(LAYOUTS)}")
    layout, overrides, source, out = LAYOUTS[key], overrides or {}, Path(source), Path(out).absolute()  # "." has no name to stage beside
    if not source.is_dir():
        raise MamolError(f"{source}: no such folder; pass the folder holding the {dataset} .mat files")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MamolError(f"{out}: already {'holds files' if out.is_dir() else 'exists as a file'}; give a new or empty folder "
                         "for the scene")
    check_folder(out.parent)
    try:
        train = find_array(source, layout.train, "train", overrides).astype(np.int64)
        test = find_array(source, layout.test, "test", overrides).astype(np.int64)
    except MissingArray:  # no training and test label files: draw them from the ground-truth map
        if not layout.ground_truth:
            raise
        train, test = split_ground_truth(find_array(source, layout.ground_truth, "ground_truth", overrides).astype(np.int64),
                                         layout.train_counts, seed)
    if train.shape != test.shape:
        raise MamolError(f"{source}: training labels {train.shape} and test labels {test.shape} differ in size")
    bands = {name: as_bands(find_array(source, candidates, name, overrides), name, train.shape)
             for name, candidates in layout.modalities.items()}  # every array read before anything is written
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        staging.mkdir(parents=True)
        for name, cube in bands.items():
            write_raster(staging / f"{name}.tif", cube, NOMINAL_TRANSFORM, crs=NOMINAL_CRS)
        write_raster(staging / "train_labels.tif", train.astype(np.uint8), NOMINAL_TRANSFORM, nodata=0, crs=NOMINAL_CRS)
        write_raster(staging / "test_labels.tif", test.astype(np.uint8), NOMINAL_TRANSFORM, nodata=0, crs=NOMINAL_CRS)
        table = {str(i): {"name": n, "color": PALETTE[(i - 1) % len(PALETTE)]} for i, n in enumerate(layout.classes, start=1)}
        (staging / "classes.json").write_text(json.dumps(table, indent=1))
        if out.is_dir():  # an empty folder (perhaps a shell's working folder) keeps its identity: the files move in
            for written in staging.iterdir():
                os.replace(written, out / written.name)
        else:
            os.replace(staging, out)  # the whole scene appears at once
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
