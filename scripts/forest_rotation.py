"""How the random-forest anchor (300 trees, 11 x 11 patches of every band, each band standardised
over the scene) copes with directions: trained on the training labels with the square's
rotations, or with patches turned by random angles (read bilinearly, or at the nearest pixel),
then scored on the test labels with the scene as it is and turned by the given angles. A
diagnostic on the test area (reported, not used to choose anything). Prints a markdown table
(per-pixel OA and accuracy per class, %).

    python scripts/forest_rotation.py --scene ../shared/data/trento --angles 0,45
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.ensemble import RandomForestClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.data.rasters import open_raster  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402

#: Training sets: (name, copies of each training pixel, angle draw, interpolation order).
TRAININGS = [("square's rotations", 4, "square", 0), ("any angle, bilinear", 8, "any", 1), ("any angle, nearest pixel", 8, "any", 0)]


def standardised_bands(scene) -> np.ndarray:
    """``[bands, H, W]`` of every modality, each band standardised over the scene."""
    stack = []
    for modality in scene.modalities:
        with open_raster(modality.path) as src:
            bands = src.read().astype(np.float64)
        stack.append((bands - bands.mean(axis=(1, 2), keepdims=True)) / np.maximum(bands.std(axis=(1, 2), keepdims=True), 1e-12))
    return np.concatenate(stack)


def patches(bands: np.ndarray, rows: np.ndarray, cols: np.ndarray, angles: np.ndarray, side: int, order: int) -> np.ndarray:
    """``[n, bands * side * side]``: patches centred on the pixels, turned by ``angles`` (radians),
    read with spline ``order`` (0 nearest, 1 bilinear) from the bands reflected at the edges."""
    pad = side
    padded = np.pad(bands, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    offsets = np.arange(side) - side // 2
    di, dj = np.meshgrid(offsets, offsets, indexing="ij")
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    src_i = rows[:, None, None] + cos * di - sin * dj + pad
    src_j = cols[:, None, None] + sin * di + cos * dj + pad
    where = [src_i.ravel(), src_j.ravel()]
    return np.concatenate([ndimage.map_coordinates(b, where, order=order, mode="nearest").reshape(len(rows), -1) for b in padded], axis=1)


def turned(array: np.ndarray, angle: float, order: int) -> np.ndarray:
    """``array`` (``[..., H, W]``) turned by ``angle`` degrees about its centre, grown to hold it all."""
    mode, fill = ("reflect", 0.0) if order else ("constant", 0)
    return ndimage.rotate(array, angle, axes=(-1, -2), order=order, reshape=True, mode=mode, cval=fill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--angles", default="0,45", help="Turns of the test scene in degrees, comma-separated.")
    parser.add_argument("--patch", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scene = open_scene(args.scene)
    if scene.test_labels is None:
        sys.exit(f"error: {args.scene}: no test labels to score on")
    bands = standardised_bands(scene)
    rng = np.random.default_rng(args.seed)
    rows, cols = np.nonzero(scene.train_labels)
    targets = scene.train_labels[rows, cols]
    angles = [float(a) for a in args.angles.split(",")]
    tests = {}
    for angle in angles:
        labels = turned(scene.test_labels, angle, 0)
        test_rows, test_cols = np.nonzero(labels)
        data = turned(bands, angle, 1)
        tests[angle] = (patches(data, test_rows, test_cols, np.zeros(len(test_rows)), args.patch, 0), labels[test_rows, test_cols])
    names = [c.name for c in scene.classes]
    print(f"| training patches | test scene turned | OA | {' | '.join(names)} |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for title, copies, draw, order in TRAININGS:
        if draw == "square":
            turns = np.repeat(np.arange(copies) * np.pi / 2, len(rows))
        else:
            turns = rng.uniform(0, 2 * np.pi, copies * len(rows))
        features = patches(bands, np.tile(rows, copies), np.tile(cols, copies), turns, args.patch, order)
        forest = RandomForestClassifier(300, n_jobs=-1, random_state=args.seed).fit(features, np.tile(targets, copies))
        for angle, (test_features, truth) in tests.items():
            predicted = forest.predict(test_features)
            per_class = [f"{100 * (predicted[truth == c.value] == c.value).mean():.1f}" if (truth == c.value).any() else "–"
                         for c in scene.classes]
            print(f"| {title} | {angle:g}° | {100 * (predicted == truth).mean():.2f} | {' | '.join(per_class)} |", flush=True)


if __name__ == "__main__":
    main()
