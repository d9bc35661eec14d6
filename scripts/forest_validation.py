"""The random-forest anchor on the validation splits that `mamol-bench run --validation` uses: for
each seed, the same whole 32-pixel blocks of the training labels are held out, a forest (300 trees,
11 x 11 patches of every band, each band standardised over the scene) is trained on the rest and
scored on them, with every sensor and with each sensor alone. Test labels are never read. Prints a
markdown table (per-pixel OA, %).

    python scripts/forest_validation.py --scene ../shared/data/trento --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.ensemble import RandomForestClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.bench.grid import VALIDATION_BLOCK  # noqa: E402
from mamol_core.data.labels import VALIDATION_UNITS, validation_holdout  # noqa: E402
from mamol_core.data.rasters import open_raster  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402


def patch_features(raster: Path, side: int) -> np.ndarray:
    """``[H, W, bands * side * side]``: every band standardised, ``side x side`` patches (reflected at the edges)."""
    with open_raster(raster) as src:
        bands = src.read().astype(np.float64)
    bands = (bands - bands.mean(axis=(1, 2), keepdims=True)) / np.maximum(bands.std(axis=(1, 2), keepdims=True), 1e-12)
    half = side // 2
    padded = np.pad(bands, ((0, 0), (half, half), (half, half)), mode="reflect")
    windows = sliding_window_view(padded, (side, side), axis=(1, 2))  # [B, H, W, side, side]
    return windows.transpose(1, 2, 0, 3, 4).reshape(bands.shape[1], bands.shape[2], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.25, help="Share of the training labels held out (as --validation).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--patch", type=int, default=11)
    parser.add_argument("--block", type=int, default=VALIDATION_BLOCK, help="Side of the held-out blocks in pixels (as --validation-block).")
    parser.add_argument("--unit", choices=VALIDATION_UNITS, default="blocks", help="Hold out whole blocks or whole fields (as --validation-unit).")
    args = parser.parse_args()
    scene = open_scene(args.scene)
    features = {m.name: patch_features(m.path, args.patch) for m in scene.modalities}
    sets = {"all sensors": list(features), **{f"{name} alone": [name] for name in features}}
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        train, held = validation_holdout(scene.train_labels, args.fraction, seed, args.unit, args.block)
        scores = {}
        for label, names in sets.items():
            stacked = np.concatenate([features[n] for n in names], axis=-1)
            forest = RandomForestClassifier(300, n_jobs=-1, random_state=0).fit(stacked[train > 0], train[train > 0])
            scores[label] = 100 * float((forest.predict(stacked[held > 0]) == held[held > 0]).mean())
        rows.append((seed, int((held > 0).sum()), scores))
    print("| seed | validation pixels | " + " | ".join(sets) + " |")
    print("|---:|---:|" + "---:|" * len(sets))
    for seed, count, scores in rows:
        print(f"| {seed} | {count} | " + " | ".join(f"{scores[k]:.2f}" for k in sets) + " |")
    means = [statistics.mean(r[2][k] for r in rows) for k in sets]
    spreads = [statistics.stdev(r[2][k] for r in rows) if len(rows) > 1 else 0.0 for k in sets]
    print("| mean ± sd | | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(means, spreads)) + " |")


if __name__ == "__main__":
    main()
