"""Test-time turning of patches: each labelled pixel classified from its patch turned by several angles
(read at the nearest pixel or bilinearly), one view at a time and by the mean of the views' class
probabilities, and the share of pixels that some view gets right (a bound, not a prediction). With
``--validation-seed`` the pixels are that seed's held-out validation pixels (test labels are not
read), and the scene is also taken as turned by each of ``--scene-angles``: view θ of
the scene turned by φ is the patch read turned by φ + θ. Prints markdown tables (per-pixel OA and
per-class accuracy, %).

    python scripts/turned_views.py --model m.safetensors --scene ../shared/data/trento --read nearest
    python scripts/turned_views.py --model runs/val/models/trento_mamol_both_0_s0.safetensors \\
        --scene ../shared/data/trento --validation-seed 0 --unit fields --scene-angles 0,15,30,45
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.bench.grid import VALIDATION_BLOCK  # noqa: E402
from mamol_core.config import ProtocolSpec  # noqa: E402
from mamol_core.data.labels import VALIDATION_UNITS, validation_holdout  # noqa: E402
from mamol_core.data.patches import PatchSampler  # noqa: E402
from mamol_core.data.pixels import prepare_scene  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402
from mamol_core.evaluation.score import order_scene_for_model  # noqa: E402
from mamol_core.modelfile.header import read_config  # noqa: E402
from mamol_core.modelfile.weights import load_model  # noqa: E402


def view_probabilities(model, sampler: PatchSampler, pixels, angles: list[float], nearest: bool, batch_size: int = 512) -> np.ndarray:
    """Class probabilities ``[n, len(angles), K]`` of each pixel's centred patch turned by each angle (degrees), every sensor present."""
    rows, cols, presence = (torch.as_tensor(a) for a in (pixels.rows, pixels.cols, pixels.presence))
    centre = sampler.size // 2
    out = np.zeros((len(pixels), len(angles), len(model.config.classes)), np.float32)
    with torch.inference_mode():
        for k, angle in enumerate(angles):
            for batch in torch.arange(len(pixels)).split(batch_size):
                anchor = torch.full_like(rows[batch], centre)
                turn = torch.full((len(batch),), math.radians(angle)) if angle % 360 else None
                src_i, src_j = sampler.indices(rows[batch], cols[batch], anchor, anchor, angle=turn)
                if nearest and turn is not None:
                    src_i, src_j = src_i.round().long(), src_j.round().long()
                logits = model(sampler.read(src_i, src_j), presence[batch])[:, :, centre, centre]
                out[batch.numpy(), k] = torch.softmax(logits.float(), 1).numpy()
    return out


def row(name: str, predicted: np.ndarray, targets: np.ndarray, classes: int) -> str:
    """A markdown row: OA and each class's accuracy."""
    per_class = [100 * (predicted[targets == c] == c).mean() if (targets == c).any() else float("nan") for c in range(classes)]
    return f"| {name} | {100 * (predicted == targets).mean():.2f} | " + " | ".join(f"{v:.1f}" for v in per_class) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--views", default="0,15,30,45,60,75", help="Angles (degrees) each patch is read turned by.")
    parser.add_argument("--read", choices=["nearest", "bilinear"], default="nearest")
    parser.add_argument("--validation-seed", type=int, help="Score this seed's held-out validation pixels, not the test labels.")
    parser.add_argument("--fraction", type=float, default=0.25, help="The --validation share the model was trained with.")
    parser.add_argument("--unit", choices=VALIDATION_UNITS, default="fields")
    parser.add_argument("--scene-angles", default="0", help="With --validation-seed: the scene taken as turned by each angle.")
    args = parser.parse_args()
    views = [float(a) for a in args.views.split(",")]
    scene_angles = [float(a) for a in args.scene_angles.split(",")] if args.validation_seed is not None else [0.0]
    config = read_config(args.model)
    held_out = None
    if args.validation_seed is not None:
        _, held_out = validation_holdout(open_scene(args.scene).train_labels, args.fraction, args.validation_seed, args.unit,
                                         VALIDATION_BLOCK)
    scene = order_scene_for_model(open_scene(args.scene, classes=config.model.classes, for_training=False), config, "the scene")
    prepared, _ = prepare_scene(scene, ProtocolSpec(0.0, "both", 0), margin=config.model.layout.patch_size,
                                specs=config.model.modalities, held_out=held_out)
    pixels = prepared.test if held_out is None else prepared.validation
    model, config = load_model(args.model, torch.device("cpu"))
    sampler = PatchSampler(torch.from_numpy(prepared.data), config.model.layout.patch_size)
    angles = sorted({phi + theta for phi in scene_angles for theta in views})
    probabilities = view_probabilities(model, sampler, pixels, angles, args.read == "nearest")
    names = [c.name for c in config.model.classes]
    print(f"{len(pixels)} pixels, patches read turned at the {args.read} pixel\n")
    print("| scene turned, view | OA | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for phi in scene_angles:
        chosen = [angles.index(phi + theta) for theta in views]
        for theta, k in zip(views, chosen):
            print(row(f"{phi:g}°, view {theta:g}°", probabilities[:, k].argmax(1), pixels.targets, len(names)))
        print(row(f"{phi:g}°, mean of the views", probabilities[:, chosen].mean(1).argmax(1), pixels.targets, len(names)))
        right_somewhere = (probabilities[:, chosen].argmax(2) == pixels.targets[:, None]).any(1)
        print(row(f"{phi:g}°, right in some view (not a prediction)", np.where(right_somewhere, pixels.targets, -1), pixels.targets,
                  len(names)))


if __name__ == "__main__":
    main()
