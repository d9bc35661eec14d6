"""Dense prediction: every pixel of a tile is classified in one backbone pass; overlapping tiles
are blended with a tent-shaped weight; the last tile of each row and column ends at the edge.

A tile is the model's ``P x P`` patch. Per tile, a modality counts as present when at least
``min_valid`` (default 0.5) of the tile's pixels hold valid data for it (covered, not nodata,
finite); the tile's presence mask goes to the model with the tile, so one model serves every
combination of sensors across a scene. Tiles with no modality present are skipped, and pixels
valid in no modality get no prediction.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from mamol_core.config import LayoutSpec
from mamol_core.errors import MamolError
from mamol_core.model import MaMOLClassifier

#: Default share of valid pixels a modality needs in a tile to count as present there.
MIN_VALID = 0.5


def default_stride(layout: LayoutSpec) -> int:
    """Tile step used unless one is given: half the tile (rounded up), so about four tiles blend
    at each pixel. On Trento's validation splits this scored 1.4-5 points of OA above tiles side by
    side (a quarter of the cost) and 2.7 above a stride of two thirds of the tile (at tokenizer width
    32, over two cells: 2.9 and 1.2); docs/benchmarks.md."""
    return max(1, math.ceil(layout.patch_size / 2))


def tile_starts(length: int, size: int, stride: int, phase: int = 0) -> np.ndarray:
    """Tile start offsets along an axis: every ``stride`` pixels from ``phase``, plus a first and a
    last tile flush with the edges so the whole axis is covered (``length >= size``)."""
    if length < size:
        raise ValueError(f"axis of {length} px is shorter than the {size} px tile")
    return np.asarray(sorted({0, *range(phase, length - size + 1, stride), length - size}))


def tiles_touching(mark: torch.Tensor, origins: torch.Tensor, size: int) -> torch.Tensor:
    """Which tiles (``origins`` ``[N, 2]``, row and column in ``mark``'s frame) hold at least one marked
    pixel of ``mark`` ``[h, w]`` (bool ``[N]``, from an integral image)."""
    integral = torch.nn.functional.pad(mark.long().cumsum(0).cumsum(1), (1, 0, 1, 0))
    r, c = origins[:, 0], origins[:, 1]
    return integral[r + size, c + size] - integral[r, c + size] - integral[r + size, c] + integral[r, c] > 0


def tent_window(size: int) -> torch.Tensor:
    """Blending weight ``[P, P]``: 1 at the centre, falling linearly to ``1 / (c + 1)`` at the
    edges (never 0, so edge pixels covered by one tile still get a prediction)."""
    centre = (size - 1) / 2
    one_d = 1 - torch.abs(torch.arange(size, dtype=torch.float32) - centre) / (centre + 1)
    return one_d[:, None] * one_d[None, :]


def inference_model(model: MaMOLClassifier, dtype: torch.dtype | None) -> MaMOLClassifier:
    """The model to predict with: itself for float32, else a copy cast to ``dtype`` (running the
    whole network in bf16 avoids autocast's per-call weight casts: about 25% faster on CPU)."""
    if dtype is None:
        return model
    return copy.deepcopy(model).to(dtype)


@dataclass
class DenseResult:
    """Blended class probabilities ``[K, h, w]`` (0 where no tile predicted) and, per pixel and
    modality, whether the modality was used there ``[M, h, w]``."""

    probabilities: torch.Tensor
    used: torch.Tensor

    @property
    def predicted(self) -> torch.Tensor:
        """Pixels with a prediction: some tile covered them and some modality was valid there."""
        return self.used.any(0)


class DensePredictor:
    """Runs a model over tiles of an in-memory block ``[C, h, w]`` (normalised, invalid values 0)."""

    def __init__(self, model: MaMOLClassifier, stride: int, batch_size: int, amp_dtype: torch.dtype | None,
                 min_valid: float = MIN_VALID) -> None:
        self.model = inference_model(model, amp_dtype)
        self.dtype = amp_dtype or torch.float32
        self.stride, self.batch_size, self.min_valid = stride, batch_size, min_valid
        self.size = model.config.layout.patch_size
        if not 1 <= stride <= self.size:
            raise MamolError(f"--stride {stride}: the tile step must lie between 1 and the model's tile side {self.size}")

    def origins(self, height: int, width: int) -> torch.Tensor:
        """All tile origins ``[N, 2]`` (row, col) covering a ``height x width`` block."""
        rows, cols = tile_starts(height, self.size, self.stride), tile_starts(width, self.size, self.stride)
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
        return torch.as_tensor(grid)

    @torch.inference_mode()
    def predict(self, data: torch.Tensor, valid: torch.Tensor, origins: torch.Tensor | None = None,
                force: torch.Tensor | None = None, on_tiles=None, inside: torch.Tensor | None = None) -> DenseResult:
        """Blend predictions of the tiles at ``origins`` (default: all tiles of the block).

        ``valid``: ``[M, h, w]`` bool. ``force``: optional ``[M]`` bool pattern ANDed with every
        tile's presence (to evaluate one missing pattern). ``inside``: optional ``[h, w]`` bool,
        the pixels that belong to the map (a raster smaller than a tile is padded); the valid
        share of a tile is counted over those. ``on_tiles(n)`` is called per batch.
        """
        device = data.device
        _, height, width = data.shape
        count, classes = valid.shape[0], len(self.model.config.classes)
        origins = (self.origins(height, width) if origins is None else origins).to(device)
        offsets = torch.arange(self.size, device=device)
        window = tent_window(self.size).to(device).reshape(-1)
        probability_sum = torch.zeros(classes, height * width, device=device)
        used_sum = torch.zeros(count, height * width, device=device)
        weight_sum = torch.zeros(height * width, device=device)
        for batch in origins.split(self.batch_size):
            rows = batch[:, 0, None, None] + offsets[None, :, None]
            cols = batch[:, 1, None, None] + offsets[None, None, :]
            tile_valid = valid[:, rows, cols].transpose(0, 1)
            area = inside[rows, cols].flatten(1).sum(-1, keepdim=True) if inside is not None else self.size**2
            presence = tile_valid.flatten(2).sum(-1) >= self.min_valid * area
            if force is not None:
                presence &= force.to(device)[None]
            keep = presence.any(1)
            if on_tiles is not None:
                on_tiles(len(batch))
            if not keep.any():
                continue
            rows, cols, presence, tile_valid = rows[keep], cols[keep], presence[keep], tile_valid[keep]
            logits = self.model(data[:, rows, cols].transpose(0, 1).to(self.dtype), presence)
            probabilities = torch.softmax(logits.float(), dim=1).flatten(2) * window
            flat = (rows * width + cols).reshape(len(rows), -1)
            index = flat.reshape(-1)
            probability_sum.index_add_(1, index, probabilities.transpose(0, 1).reshape(classes, -1))
            weight_sum.index_add_(0, index, window.expand(len(rows), -1).reshape(-1))
            tile_used = (presence[:, :, None] & tile_valid.flatten(2)).float() * window
            used_sum.index_add_(1, index, tile_used.transpose(0, 1).reshape(count, -1))
        probabilities = probability_sum / weight_sum.clamp_min(1e-12)
        used = used_sum > 0
        return DenseResult(probabilities.reshape(classes, height, width), used.reshape(count, height, width))
