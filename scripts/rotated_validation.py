"""Orientation robustness on the validation split: for each model that `mamol-bench run --validation
F --save-models` trained (one per seed), the scene and that seed's held-out blocks (or fields,
``--unit fields``) are turned by each angle and the held-out pixels scored per pixel (`mamol-eval --mode pixel`). A model that learned an
oriented texture (crop rows) in one direction only loses accuracy when the scene turns. Test labels
are never read. Prints a markdown table (per-pixel OA, %) with each run's mean over the angles (with
angles spread evenly over 0–45°, the accuracy expected where fields lie in any direction: the
square's symmetries, which every run trains with, map every direction into that range), and every
run's per-seed difference from the first run on that mean.

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
from mamol_core.data.labels import VALIDATION_UNITS, validation_holdout  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402


def write_turned(path: Path, array: np.ndarray, profile: dict, angle: float, labels: bool, nearest: bool = False) -> None:
    """``array`` turned by ``angle`` degrees (data bilinearly, or at the nearest pixel with ``nearest``, reflected
    at the edges; labels at the nearest pixel, 0 outside), written in the source's CRS on a grid of its pixel
    size with a nominal origin."""
    if angle:
        array = ndimage.rotate(array, angle, reshape=True, order=0 if labels or nearest else 1,
                               mode="constant" if labels else "reflect", cval=0)
    transform = profile["transform"]
    profile = {**profile, "height": array.shape[0], "width": array.shape[1], "nodata": None,
               "transform": from_origin(transform.c, transform.f, transform.a, -transform.e)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array.astype(profile["dtype"]), 1)


def turned_scene(scene_dir: Path, held_out: np.ndarray, angle: float, folder: Path, nearest: bool = False) -> Path:
    """A scene folder with every single-band modality raster turned by ``angle`` (at the nearest pixel with
    ``nearest``) and the held-out labels as test labels."""
    scene = open_scene(scene_dir)
    folder.mkdir(parents=True)
    for modality in scene.modalities:
        with rasterio.open(modality.path) as src:
            if src.count != 1:
                raise SystemExit(f"{modality.path}: this script turns single-band rasters only")
            write_turned(folder / modality.path.name, src.read(1), src.profile, angle, labels=False, nearest=nearest)
    with rasterio.open(scene_dir / "train_labels.tif") as src:
        write_turned(folder / "test_labels.tif", held_out, src.profile, angle, labels=True)
    shutil.copy(scene_dir / "classes.json", folder / "classes.json")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="mamol-bench run output folders with models/")
    parser.add_argument("--fraction", type=float, default=0.25, help="The --validation share the runs used.")
    parser.add_argument("--unit", choices=VALIDATION_UNITS, default="blocks", help="The --validation-unit the runs used.")
    parser.add_argument("--angles", default="0,15,30,45")
    parser.add_argument("--read", choices=["bilinear", "nearest"], default="bilinear",
                        help="How the scene's bands are turned: bilinear (as sessions 21-22 measured) blurs row textures a few "
                             "pixels apart; nearest keeps them sharp.")
    args = parser.parse_args()
    angles = [float(a) for a in args.angles.split(",")]
    train_labels = open_scene(args.scene).train_labels
    scores: dict[tuple[str, int, float], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            for model in sorted((run / "models").glob("*.safetensors")):
                seed = int(model.stem.rsplit("_s", 1)[1])
                _, held_out = validation_holdout(train_labels, args.fraction, seed, args.unit, VALIDATION_BLOCK)
                for angle in angles:
                    folder = turned_scene(args.scene, held_out, angle, Path(tmp, f"{run.name}_{seed}_{angle:g}"),
                                          nearest=args.read == "nearest")
                    report = Path(tmp, f"report_{folder.name}")
                    subprocess.run([sys.executable, "-m", "mamol_cli.evaluate", "--model", str(model), "--scene", str(folder),
                                    "--mode", "pixel", "--progress", "none", "--quiet", "-o", str(report)], check=True)
                    oa = json.loads((report / "metrics.json").read_text())["results"]["overall"]["oa"]
                    scores[(run.name, seed, angle)] = oa
    seeds = {run.name: sorted({s for (name, s, _) in scores if name == run.name}) for run in args.runs}
    over_angles = {(run.name, seed): statistics.mean(scores[(run.name, seed, a)] for a in angles)
                   for run in args.runs for seed in seeds[run.name]}
    print("| run | " + " | ".join(f"turned {a:g}°" for a in angles) + " | mean over the angles |")
    print("|---|" + "---:|" * (len(angles) + 1))
    for run in args.runs:
        columns = [[scores[(run.name, seed, a)] for seed in seeds[run.name]] for a in angles]
        columns.append([over_angles[(run.name, seed)] for seed in seeds[run.name]])
        print(f"| {run.name} | " + " | ".join(summary(values) for values in columns) + " |")
    first = args.runs[0].name
    for run in args.runs[1:]:
        shared = [seed for seed in seeds[run.name] if seed in seeds[first]]
        gains = [over_angles[(run.name, seed)] - over_angles[(first, seed)] for seed in shared]
        if gains:
            print(f"\n{run.name} − {first}, mean over the angles, same seed: " + ", ".join(f"{g:+.2f}" for g in gains)
                  + f"; mean {statistics.mean(gains):+.2f}, higher on {sum(g > 0 for g in gains)} of {len(gains)} seeds")


def summary(values: list[float]) -> str:
    """``mean ± sd (v1, v2, ...)`` of per-seed scores."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f} ({', '.join(f'{v:.2f}' for v in values)})"


if __name__ == "__main__":
    main()
