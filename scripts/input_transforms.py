"""Which changes to the inputs and the training of a small patch CNN carry a scene's training labels
further: the band transform (standardised, quantile-normalised or log), turning and zooming the
training patches, gain and noise, pixel dropout, label smoothing, wider or orientation-pooled first convolutions,
and MaMOL-like 4 x 4-pixel tokens whose pixels are merged in place or sorted first (``tok``, ``sorttok``).
A cheap proxy for MaMOL's tokenizer and head (the CNN of ``scripts/patch_learners.py``, trained as
MaMOL is: AdamW, lr 2e-3, weight decay 0.02, warm-up then decay, 500 steps of 128, the square's
symmetries), scored per pixel twice for each seed: on a field validation split of the training
labels (``validation_holdout(..., "fields")``, the split that chooses defaults) and, trained on all
training labels, on the test area (reported, never used to choose). The band transforms are fitted
over every pixel of the scene (no labels), unlike ``mamol-train``, which fits on training pixels.

    python scripts/input_transforms.py --scene ../shared/data/trento --seeds 0,1,2 \\
        --variants plain,rotate-nearest,zoom-nearest --transform quantile

A variant joins changes with ``+`` (``rotate-nearest+smooth``); ``plain`` is none of them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.stats import norm, rankdata
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.data.labels import validation_holdout  # noqa: E402
from mamol_core.data.rasters import open_raster  # noqa: E402
from mamol_core.data.scene import open_scene  # noqa: E402
from patch_learners import train_network  # noqa: E402

#: Side of the patches read: larger than the 11-pixel crop the CNN sees, so turned and zoomed crops stay inside.
READ_SIDE = 17
CROP_SIDE = 11
#: Share of the pixel values ``pixeldrop`` sets to the band's mean in each training patch.
PIXEL_DROP = 0.3
CHANGES = ("rotate-nearest", "rotate-bilinear", "zoom-nearest", "zoom-bilinear", "gain", "noise", "smooth", "orient", "k5",
           "tok", "sorttok", "pixeldrop")


def transformed_bands(scene, transform: str) -> np.ndarray:
    """Every band of every modality, standardised, or mapped to normal scores of its ranks, or log(1 + x - min) then standardised."""
    out = []
    for modality in scene.modalities:
        with open_raster(modality.path) as src:
            bands = src.read().astype(np.float64)
        for band in bands:
            if transform == "quantile":
                band = norm.ppf((rankdata(band.ravel()).reshape(band.shape) - 0.5) / band.size)
            elif transform == "log":
                band = np.log1p(np.maximum(band - band.min(), 0))
            out.append((band - band.mean()) / max(band.std(), 1e-12))
    return np.array(out, np.float32)


def patch_stack(bands: np.ndarray, side: int) -> np.ndarray:
    """``[H, W, bands, side, side]`` patches, reflected at the edges."""
    half = side // 2
    padded = np.pad(bands, ((0, 0), (half, half), (half, half)), mode="reflect")
    return sliding_window_view(padded, (side, side), axis=(1, 2)).transpose(1, 2, 0, 3, 4)


def crop(patches: torch.Tensor, side: int = CROP_SIDE) -> torch.Tensor:
    offset = (patches.shape[-1] - side) // 2
    return patches[..., offset : offset + side, offset : offset + side]


class OrientationPooledConv(nn.Module):
    """One convolution applied with its kernels turned to ``turns`` angles over 180°, the maximum over
    the angles kept: a response that does not depend on the direction of rows."""

    def __init__(self, inputs: int, outputs: int, kernel: int = 5, turns: int = 8):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(outputs, inputs, kernel, kernel) / math.sqrt(inputs * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(outputs))
        self.turns = turns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        responses = []
        for turn in range(self.turns):
            angle = math.pi * turn / self.turns
            theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]], dtype=x.dtype)
            grid = F.affine_grid(theta[None].expand(self.weight.shape[0], 2, 3), list(self.weight.shape), align_corners=False)
            kernels = F.grid_sample(self.weight, grid, align_corners=False)
            responses.append(F.conv2d(x, kernels, self.bias, padding=self.weight.shape[-1] // 2))
        return torch.stack(responses).amax(0)


class TokenNet(nn.Module):
    """MaMOL's tokenizer in small: a per-pixel (1 x 1) convolution, then one token per 4 x 4 pixels
    (the square crop padded to 12 x 12 at its far edges), whose 16 pixels' features are merged by one linear
    map, in place or, with ``sort``, sorted per feature first (so a token does not see which way rows
    run inside it); then a 3 x 3 convolution over the 3 x 3 tokens, their mean and a linear head."""

    def __init__(self, bands: int, classes: int, sort: bool, block: int = 4) -> None:
        super().__init__()
        self.sort, self.block = sort, block
        self.pixels = nn.Sequential(nn.Conv2d(bands, 32, 1), nn.GELU())
        self.merge = nn.Linear(32 * block * block, 64)
        self.tokens = nn.Sequential(nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = -x.shape[-1] % self.block
        features = self.pixels(F.pad(x, (0, extra, 0, extra), mode="replicate"))
        blocks = features.unfold(2, self.block, self.block).unfold(3, self.block, self.block).flatten(4)  # [B, 32, r, c, 16]
        if self.sort:
            blocks = blocks.sort(-1).values
        tokens = self.merge(blocks.permute(0, 2, 3, 1, 4).flatten(3)).permute(0, 3, 1, 2)
        return self.head(self.tokens(tokens))


def build_cnn(changes: set[str], bands: int, classes: int) -> nn.Module:
    """The 3-convolution CNN of ``scripts/patch_learners.py``, its first convolution as ``changes``
    say, or with ``tok``/``sorttok`` a :class:`TokenNet`."""
    if changes & {"tok", "sorttok"}:
        return TokenNet(bands, classes, sort="sorttok" in changes)
    if "orient" in changes:
        first = OrientationPooledConv(bands, 32)
    else:
        first = nn.Conv2d(bands, 32, 5 if "k5" in changes else 3, padding=2 if "k5" in changes else 1)
    return nn.Sequential(first, nn.GELU(), nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))


def resample(batch: torch.Tensor, generator: torch.Generator, mode: str, kind: str) -> torch.Tensor:
    """Each patch turned by a random angle (``turn``) or zoomed by a random factor in 0.8-1.25 (``zoom``)."""
    count, zero = len(batch), torch.zeros(len(batch))
    if kind == "turn":
        angle = torch.rand(count, generator=generator) * 2 * math.pi
        rows = [torch.stack([angle.cos(), -angle.sin(), zero], 1), torch.stack([angle.sin(), angle.cos(), zero], 1)]
    else:
        scale = torch.exp(torch.empty(count).uniform_(math.log(0.8), math.log(1.25), generator=generator))
        rows = [torch.stack([scale, zero, zero], 1), torch.stack([zero, scale, zero], 1)]
    grid = F.affine_grid(torch.stack(rows, 1), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode=mode, align_corners=False)


def train_cnn(model: nn.Module, patches: torch.Tensor, targets: torch.Tensor, seed: int, changes: set[str]) -> nn.Module:
    """:func:`patch_learners.train_network` on batches changed as ``changes`` say: turned or zoomed
    and cropped before the square's symmetries, gain and noise after them."""

    def before(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for change, mode, kind in (("rotate-nearest", "nearest", "turn"), ("rotate-bilinear", "bilinear", "turn"),
                                   ("zoom-nearest", "nearest", "zoom"), ("zoom-bilinear", "bilinear", "zoom")):
            if change in changes:
                batch = resample(batch, generator, mode, kind)
        return crop(batch)

    def after(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if "gain" in changes:
            batch = batch * (1 + 0.6 * (torch.rand(len(batch), batch.shape[1], 1, 1, generator=generator) - 0.5))
        if "noise" in changes:
            batch = batch + 0.3 * torch.randn(batch.shape, generator=generator)
        if "pixeldrop" in changes:  # each pixel of each band set to the band's mean (0) with probability 0.3
            batch = batch * (torch.rand(batch.shape, generator=generator) >= PIXEL_DROP)
        return batch

    return train_network(model, patches, targets, seed, before=before, after=after, label_smoothing=0.1 if "smooth" in changes else 0.0)


def predict(model: nn.Module, patches: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(crop(part)).argmax(1) for part in patches.split(4096)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="plain", help=f"Comma-separated; each joins with + some of: {', '.join(CHANGES)}.")
    parser.add_argument("--transform", choices=("standard", "quantile", "log"), default="standard")
    parser.add_argument("--validation", type=float, default=0.25, help="Share of the training labels held out, in whole fields.")
    args = parser.parse_args()
    variants = {v: set() if v == "plain" else set(v.split("+")) for v in args.variants.split(",")}
    unknown = set().union(*variants.values()) - set(CHANGES)
    if unknown:
        sys.exit(f"error: unknown change {', '.join(sorted(unknown))}; use {', '.join(CHANGES)}")
    if any(changes & {"tok", "sorttok"} and changes & {"orient", "k5"} for changes in variants.values()):
        sys.exit("error: tok and sorttok have their own first layer; they do not join orient or k5")
    scene = open_scene(args.scene)
    if scene.test_labels is None:
        sys.exit(f"error: {args.scene}: no test labels to score on")
    stack = patch_stack(transformed_bands(scene, args.transform), READ_SIDE)
    classes = [c.value for c in scene.classes]
    lookup = np.zeros(max(classes) + 1, np.int64)
    lookup[classes] = np.arange(len(classes))
    test = scene.test_labels > 0
    test_truth = scene.test_labels[test]
    names = [c.name for c in scene.classes]
    print(f"transform {args.transform}; seeds {args.seeds}; validation: whole fields, share {args.validation}")
    print(f"| variant | validation OA per seed | validation mean | test OA mean ± sd | {' | '.join(names)} (test) |")
    print("|---|---|---:|---:|" + "---:|" * len(names))
    for variant, changes in variants.items():
        validation, test_oa, per_class, start = [], [], [], time.perf_counter()
        for seed in (int(s) for s in args.seeds.split(",")):
            kept, held = validation_holdout(scene.train_labels, args.validation, seed, "fields", 32)
            for labels, scored, truth in ((kept, stack[held > 0], held[held > 0]), (scene.train_labels, stack[test], test_truth)):
                torch.manual_seed(seed)
                chosen = labels > 0
                model = train_cnn(build_cnn(changes, stack.shape[2], len(classes)), torch.from_numpy(np.ascontiguousarray(stack[chosen])),
                                  torch.from_numpy(lookup[labels[chosen]]), seed, changes)
                predicted = np.array(classes)[predict(model, torch.from_numpy(np.ascontiguousarray(scored)))]
                (validation if labels is kept else test_oa).append(100 * float((predicted == truth).mean()))
                if labels is not kept:
                    per_class.append([100 * float((predicted[truth == c] == c).mean()) if (truth == c).any() else math.nan for c in classes])
        spread = statistics.stdev(test_oa) if len(test_oa) > 1 else 0.0
        print(f"| {variant} | {', '.join(f'{v:.1f}' for v in validation)} | {statistics.mean(validation):.2f} | "
              f"{statistics.mean(test_oa):.2f} ± {spread:.2f} | {' | '.join(f'{v:.1f}' for v in np.nanmean(per_class, 0))} |", flush=True)
        print(f"  ({variant}: {time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
