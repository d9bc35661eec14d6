"""Does a trained model use each sensor? Trains one cell on the validation split of a scene (whole
32-pixel blocks of the training labels held out), then scores all validation pixels with the presence
forced to every pattern: complete, and each sensor alone. The gap between "complete" and one sensor
alone is what the other sensors add. Prints a markdown table; test labels are never read.

    python scripts/presence_gain.py --scene ../shared/data/trento --rate 0.5 --condition lidar_elevation --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.bench.grid import validation_scene  # noqa: E402
from mamol_core.config import ENCODINGS, BackboneSpec, ExpertSpec, LayoutSpec, ProtocolSpec, TrainSpec  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402
from mamol_core.device import autocast_dtype  # noqa: E402
from mamol_core.evaluation.score import predict_test_pixels  # noqa: E402
from mamol_core.training.fit import train_on_scene  # noqa: E402


def forced_patterns(names: list[str]) -> dict[str, list[bool]]:
    """Complete, then each modality alone."""
    patterns = {"complete": [True] * len(names)}
    for index, name in enumerate(names):
        patterns[f"only {name}"] = [i == index for i in range(len(names))]
    return patterns


def score_seed(scene_dir: Path, args: argparse.Namespace, seed: int, device: torch.device) -> dict[str, float]:
    """Validation OA of one seed's model under each forced pattern."""
    scene = validation_scene(open_scene(scene_dir), args.validation, seed)
    amp = autocast_dtype(device)
    run = train_on_scene(scene, BackboneSpec(args.backbone), ExpertSpec(), LayoutSpec(encoding=args.encoding),
                         ProtocolSpec(args.rate, args.condition, seed), TrainSpec(seed=seed), device, amp, "none")
    pixels = run.prepared.test
    scores = {}
    for label, pattern in forced_patterns(scene.names).items():
        forced = dataclasses.replace(pixels, presence=np.tile(np.array(pattern), (len(pixels), 1)))
        predicted = predict_test_pixels(run.model, dataclasses.replace(run.prepared, test=forced), "pixel", None, amp, 256, "none", device)
        scores[label] = float((predicted == pixels.targets).mean() * 100)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--condition", default="both")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--validation", type=float, default=0.25)
    parser.add_argument("--encoding", choices=ENCODINGS, default=LayoutSpec.encoding)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    for seed in seeds:
        results[seed] = score_seed(args.scene, args, seed, device)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[seed].items()), flush=True)
    labels = list(results[seeds[0]])
    print(f"\n{args.scene.name}, missing rate {args.rate:g}, {args.condition} missing, {args.encoding} encoding; "
          "validation OA with the presence forced\n")
    print("| pattern | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | complete − pattern |")
    print("|---|" + "---:|" * (len(seeds) + 2))
    for label in labels:
        values = [results[s][label] for s in seeds]
        gain = statistics.mean(results[s]["complete"] - results[s][label] for s in seeds)
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {statistics.mean(values):.2f} | {gain:+.2f} |")


if __name__ == "__main__":
    main()
