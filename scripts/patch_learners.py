"""Which kinds of learner carry a scene's training labels over to its test area: tree ensembles,
single trees, a linear model and small neural networks trained from scratch, all on the same
``P x P`` patches of every band (each band standardised over the scene) with the centre pixel's
label, scored per pixel on the test labels. The networks train as MaMOL does (AdamW, lr 2e-3,
weight decay 0.02, warm-up then decay, 500 steps of 128, the square's symmetries) over several
seeds. A diagnostic on the test area (reported, not used to choose anything). Prints a markdown
table (OA and accuracy per class, %).

    python scripts/patch_learners.py --scene ../shared/data/trento --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.data.rasters import open_raster  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402


def patch_stack(scene, side: int) -> np.ndarray:
    """``[H, W, bands, side, side]``: every band of every modality standardised, patches reflected at the edges."""
    stack = []
    for modality in scene.modalities:
        with open_raster(modality.path) as src:
            bands = src.read().astype(np.float32)
        stack.append((bands - bands.mean(axis=(1, 2), keepdims=True)) / np.maximum(bands.std(axis=(1, 2), keepdims=True), 1e-12))
    bands = np.concatenate(stack)
    half = side // 2
    padded = np.pad(bands, ((0, 0), (half, half), (half, half)), mode="reflect")
    return sliding_window_view(padded, (side, side), axis=(1, 2)).transpose(1, 2, 0, 3, 4)


def networks(bands: int, side: int, classes: int) -> dict[str, nn.Module]:
    """Small networks on ``[bands, side, side]`` patches: a CNN with pooling, a flat CNN, an MLP."""
    return {
        "CNN (3 convolutions, pooling)": nn.Sequential(
            nn.Conv2d(bands, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)),
        "CNN (2 convolutions, linear on every position)": nn.Sequential(
            nn.Conv2d(bands, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.Flatten(),
            nn.Linear(32 * side * side, classes)),
        "MLP (2 hidden layers of 256)": nn.Sequential(
            nn.Flatten(), nn.Linear(bands * side * side, 256), nn.GELU(), nn.Dropout(0.2), nn.Linear(256, 256), nn.GELU(),
            nn.Linear(256, classes)),
    }


def train_network(model: nn.Module, patches: torch.Tensor, targets: torch.Tensor, seed: int, steps: int = 500,
                  before: Callable | None = None, after: Callable | None = None, label_smoothing: float = 0.0) -> nn.Module:
    """AdamW with 10 % warm-up then linear decay, batches of 128 turned and flipped at random;
    ``before(batch, generator)`` and ``after(batch, generator)``, when given, change each batch
    before and after the turn and flip."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.02)
    warmup = steps // 10
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else (steps - s) / (steps - warmup))
    model.train()
    for _ in range(steps):
        index = torch.randint(len(patches), (128,), generator=generator)
        batch = before(patches[index], generator) if before else patches[index]
        turns = int(torch.randint(4, (1,), generator=generator))
        batch = torch.rot90(batch, turns, (2, 3))
        if torch.rand(1, generator=generator) < 0.5:
            batch = batch.flip(3)
        if after:
            batch = after(batch, generator)
        loss = nn.functional.cross_entropy(model(batch), targets[index], label_smoothing=label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def scores(predicted: np.ndarray, truth: np.ndarray, classes: list[int]) -> tuple[float, list[float]]:
    """OA and per-class accuracy (%)."""
    return 100 * float((predicted == truth).mean()), [100 * float((predicted[truth == c] == c).mean()) for c in classes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--patch", type=int, default=11)
    parser.add_argument("--seeds", default="0,1,2", help="Seeds of the networks (the trees use seed 0).")
    args = parser.parse_args()
    scene = open_scene(args.scene)
    if scene.test_labels is None:
        sys.exit(f"error: {args.scene}: no test labels to score on")
    stack = patch_stack(scene, args.patch)
    train, test = scene.train_labels > 0, scene.test_labels > 0
    x_train, x_test = stack[train], stack[test]
    y_train, y_test = scene.train_labels[train], scene.test_labels[test]
    classes = [c.value for c in scene.classes if (y_test == c.value).any()]
    names = [c.name for c in scene.classes if c.value in classes]
    print(f"| learner | OA | {' | '.join(names)} |")
    print("|---|---:|" + "---:|" * len(names))
    flat_train, flat_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    for title, learner in (("random forest, 300 trees (the anchor)", RandomForestClassifier(300, n_jobs=-1, random_state=0)),
                           ("extra trees, 300", ExtraTreesClassifier(300, n_jobs=-1, random_state=0)),
                           ("bagged trees, 300 (every feature at every split)",
                            RandomForestClassifier(300, max_features=1.0, n_jobs=-1, random_state=0)),
                           ("one decision tree", DecisionTreeClassifier(random_state=0)),
                           ("logistic regression (C 0.1)", LogisticRegression(C=0.1, max_iter=2000))):
        oa, per_class = scores(learner.fit(flat_train, y_train).predict(flat_test), y_test, classes)
        print(f"| {title} | {oa:.2f} | {' | '.join(f'{v:.1f}' for v in per_class)} |", flush=True)
    lookup = np.zeros(max(classes) + 1, np.int64)
    lookup[classes] = np.arange(len(classes))
    patches_train, patches_test = torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(np.ascontiguousarray(x_test))
    targets = torch.from_numpy(lookup[y_train])
    seeds = [int(s) for s in args.seeds.split(",")]
    for title in networks(x_train.shape[1], args.patch, len(classes)):
        runs, start = [], time.perf_counter()
        for seed in seeds:
            torch.manual_seed(seed)
            model = train_network(networks(x_train.shape[1], args.patch, len(classes))[title], patches_train, targets, seed)
            with torch.no_grad():
                predicted = torch.cat([model(part).argmax(1) for part in patches_test.split(4096)]).numpy()
            runs.append(scores(np.array(classes)[predicted], y_test, classes))
        oas = [oa for oa, _ in runs]
        per_class = np.mean([pc for _, pc in runs], axis=0)
        spread = f" ± {statistics.stdev(oas):.2f}" if len(oas) > 1 else ""
        print(f"| {title}, seeds {args.seeds} | {statistics.mean(oas):.2f}{spread} | {' | '.join(f'{v:.1f}' for v in per_class)} |",
              flush=True)
        print(f"  ({title}: {time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
