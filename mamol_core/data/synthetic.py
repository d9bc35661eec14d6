"""A synthetic two-sensor scene where both sensors are needed.

Fields (Voronoi cells) carry six classes. Grass/Trees and Bare soil/Buildings share a spectrum
and differ only in height; Grass, Bare soil, Water and Road are all low and differ only in
spectrum. A hyperspectral-like cube alone cannot split the first pairs, a DSM alone cannot split
the low classes. The scene is written as GeoTIFFs with train/test label rasters, a class table and
vector ground truth (training points, test polygons).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from mamol_core.data.rasters import write_raster

CLASSES = {
    1: ("Grass", "#9be564", "vegetation", False),
    2: ("Trees", "#1b7837", "vegetation", True),
    3: ("Bare soil", "#c8a165", "soil", False),
    4: ("Buildings", "#b2182b", "soil", True),
    5: ("Water", "#2166ac", "water", False),
    6: ("Road", "#707070", "asphalt", False),
}
CRS_CODE = "EPSG:32632"


@dataclass
class SyntheticScene:
    """Arrays of a generated scene: cube ``[bands, H, W]``, dsm ``[H, W]``, class map, field ids."""

    cube: np.ndarray
    dsm: np.ndarray
    classes: np.ndarray
    fields: np.ndarray
    transform: Affine


def spectrum(kind: str, bands: int) -> np.ndarray:
    """A smooth reflectance curve over ``bands`` wavelengths between 400 and 1000 nm."""
    wl = np.linspace(400, 1000, bands)
    if kind == "vegetation":
        return 0.05 + 0.04 * np.exp(-((wl - 550) / 40) ** 2) + 0.45 / (1 + np.exp(-(wl - 715) / 15))
    if kind == "soil":
        return 0.12 + 0.25 * (wl - 400) / 600
    if kind == "water":
        return 0.08 * np.exp(-(wl - 400) / 150) + 0.01
    return np.full(bands, 0.09) + 0.01 * np.sin(wl / 90)


def generate(height: int, width: int, bands: int = 16, fields: int = 40, seed: int = 0, pixel: float = 2.0) -> SyntheticScene:
    """Generate a scene of ``height x width`` pixels with about ``fields`` fields."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform([0, 0], [height, width], size=(fields, 2))
    rows, cols = np.mgrid[0:height, 0:width]
    distance = (rows[..., None] - seeds[:, 0]) ** 2 + (cols[..., None] - seeds[:, 1]) ** 2
    field_id = distance.argmin(-1) + 1
    field_class = rng.permutation(np.resize(np.arange(1, 7), fields))
    class_map = field_class[field_id - 1].astype(np.uint8)

    cube = np.zeros((bands, height, width), np.float32)
    dsm = 200 + 3 * np.sin(rows / 37.0) + 2 * np.cos(cols / 53.0)
    for fid in range(1, fields + 1):
        inside = field_id == fid
        name, _, kind, tall = CLASSES[int(field_class[fid - 1])]
        curve = spectrum(kind, bands) * rng.uniform(0.85, 1.15) + rng.normal(0, 0.005, bands)
        cube[:, inside] = curve[:, None]
        if tall:
            dsm[inside] += rng.uniform(6, 14) + (rng.normal(0, 1.5, inside.sum()) if name == "Trees" else 0)
    cube += rng.normal(0, 0.01, cube.shape).astype(np.float32)
    dsm = (dsm + rng.normal(0, 0.3, dsm.shape)).astype(np.float32)
    transform = Affine(pixel, 0, 664000.0, 0, -pixel, 5104000.0)
    return SyntheticScene(cube, dsm, class_map, field_id.astype(np.int32), transform)


def split_labels(scene: SyntheticScene, per_field: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sparse training pixels (``per_field`` per field, away from edges) and test pixels from
    the other interior pixels of the fields, disjoint from training."""
    rng = np.random.default_rng(seed + 1)
    interior = np.zeros_like(scene.classes, bool)
    for fid in np.unique(scene.fields):
        interior |= ndimage.binary_erosion(scene.fields == fid, iterations=2)
    train = np.zeros_like(scene.classes)
    for fid in np.unique(scene.fields):
        candidates = np.flatnonzero((scene.fields == fid).ravel() & interior.ravel())
        chosen = rng.choice(candidates, size=min(per_field, len(candidates)), replace=False)
        train.ravel()[chosen] = scene.classes.ravel()[chosen]
    test = np.where(interior & (train == 0), scene.classes, 0).astype(np.uint8)
    return train, test


def write_class_table(path: Path) -> None:
    table = {str(v): {"name": name, "color": color} for v, (name, color, _, _) in CLASSES.items()}
    Path(path).write_text(json.dumps(table, indent=1))


def write_scene(folder: Path, height: int, width: int, bands: int = 16, fields: int = 40, per_field: int = 8,
                seed: int = 0, vector: bool = False) -> SyntheticScene:
    """Write ``hsi.tif`` (uint16 reflectance x 10000, nodata 0), ``dsm.tif`` (float32 metres), label
    rasters, ``classes.json`` (and vector ground truth) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = generate(height, width, bands, fields, seed)
    train, test = split_labels(scene, per_field, seed)
    reflectance = np.clip(np.rint(scene.cube * 10000), 1, 65535).astype(np.uint16)
    write_raster(folder / "hsi.tif", reflectance, scene.transform, nodata=0)
    write_raster(folder / "dsm.tif", scene.dsm, scene.transform)
    write_raster(folder / "train_labels.tif", train, scene.transform, nodata=0)
    write_raster(folder / "test_labels.tif", test, scene.transform, nodata=0)
    write_class_table(folder / "classes.json")
    if vector:
        write_vector_truth(folder, scene, train, test)
    return scene


def write_vector_truth(folder: Path, scene: SyntheticScene, train: np.ndarray, test: np.ndarray) -> None:
    """Training points (``train_points.gpkg``) and test polygons (``test_polygons.gpkg``), field ``landcover`` (names)."""
    import geopandas
    from rasterio import features
    from shapely.geometry import Point, shape

    names = {v: c[0] for v, c in CLASSES.items()}
    rows, cols = np.nonzero(train)
    xs, ys = rasterio.transform.xy(scene.transform, rows, cols)
    points = geopandas.GeoDataFrame({"landcover": [names[int(v)] for v in train[rows, cols]]},
                                    geometry=[Point(x, y) for x, y in zip(xs, ys)], crs=CRS_CODE)
    points.to_file(folder / "train_points.gpkg", driver="GPKG")
    polygons = [(shape(geom), names[int(value)]) for geom, value in features.shapes(test, mask=test > 0, transform=scene.transform)]
    frame = geopandas.GeoDataFrame({"landcover": [n for _, n in polygons]}, geometry=[g for g, _ in polygons], crs=CRS_CODE)
    frame.to_file(folder / "test_polygons.gpkg", driver="GPKG")
