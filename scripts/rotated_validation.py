"""Orientation robustness on the validation split: for each model that `mamol-bench run --validation
F --save-models` trained (one per seed), the scene and that seed's held-out blocks are turned by each
angle and the held-out pixels scored per pixel (`mamol-eval --mode pixel`). A model that learned an
oriented texture (crop rows) in one direction only loses accuracy when the scene turns. Test labels
are never read. Prints a markdown table (per-pixel OA, %).

    python scripts/rotated_validation.py --scene ../shared/data/trento --runs runs/val_rot_square runs/val_rot_any
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.bench.grid import VALIDATION_BLOCK  # noqa: E402
from mamol_core.data.labels import block_holdout  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402


def write_turned(path: Path, array: np.ndarray, profile: dict, angle: float, labels: bool) -> None:
    """``array`` turned by ``angle`` degrees (bilinear and reflected at the edges for data, nearest and
    0 outside for labels), written in the source's CRS on a grid of its pixel size with a nominal origin."""
    if angle:
        array = ndimage.rotate(array, angle, reshape=True, order=0 if labels else 1, mode="constant" if labels else "reflect", cval=0)
    transform = profile["transform"]
    profile = {**profile, "height": array.shape[0], "width": array.shape[1], "nodata": None,
               "transform": from_origin(transform.c, transform.f, transform.a, -transform.e)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array.astype(profile["dtype"]), 1)


def turned_scene(scene_dir: Path, held_out: np.ndarray, angle: float, folder: Path) -> Path:
    """A scene folder with every single-band modality raster turned by ``angle`` and the held-out labels as test labels."""
    scene = open_scene(scene_dir)
    folder.mkdir(parents=True)
    for modality in scene.modalities:
        with rasterio.open(modality.path) as src:
            if src.count != 1:
                raise SystemExit(f"{modality.path}: this script turns single-band rasters only")
            write_turned(folder / modality.path.name, src.read(1), src.profile, angle, labels=False)
    with rasterio.open(scene_dir / "train_labels.tif") as src:
        write_turned(folder / "test_labels.tif", held_out, src.profile, angle, labels=True)
    shutil.copy(scene_dir / "classes.json", folder / "classes.json")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="mamol-bench run output folders with models/")
    parser.add_argument("--fraction", type=float, default=0.25, help="The --validation share the runs used.")
    parser.add_argument("--angles", default="0,30,45")
    args = parser.parse_args()
    angles = [float(a) for a in args.angles.split(",")]
    train_labels = open_scene(args.scene).train_labels
    scores: dict[tuple[str, float], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            for model in sorted((run / "models").glob("*.safetensors")):
                seed = int(model.stem.rsplit("_s", 1)[1])
                _, held_out = block_holdout(train_labels, args.fraction, VALIDATION_BLOCK, seed)
                for angle in angles:
                    folder = turned_scene(args.scene, held_out, angle, Path(tmp, f"{run.name}_{seed}_{angle:g}"))
                    report = Path(tmp, f"report_{folder.name}")
                    subprocess.run([sys.executable, "-m", "mamol_cli.evaluate", "--model", str(model), "--scene", str(folder),
                                    "--mode", "pixel", "--progress", "none", "--quiet", "-o", str(report)], check=True)
                    oa = json.loads((report / "metrics.json").read_text())["results"]["overall"]["oa"]
                    scores.setdefault((run.name, angle), []).append(oa)
    print("| run | " + " | ".join(f"turned {a:g}°" for a in angles) + " |")
    print("|---|" + "---:|" * len(angles))
    for run in args.runs:
        cells = []
        for angle in angles:
            values = scores[(run.name, angle)]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f} ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"| {run.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
