"""Gathering ``P x P`` patches around pixels of a scene tensor that lives on the compute device."""

from __future__ import annotations

import itertools
import math

import torch
from torch.nn import functional as F

#: The 8 symmetries of the square (rotations and flips) as 2x2 integer matrices.
DIHEDRAL = torch.tensor(
    [[[0, s1], [s2, 0]] if swap else [[s1, 0], [0, s2]] for swap, s1, s2 in itertools.product([False, True], [1, -1], [1, -1])]
)


class PatchSampler:
    """Holds a normalised ``[C, H, W]`` tensor padded by reflection (and optionally a label map
    ``[H, W]``, 0 = unlabelled, padded with 0) and gathers patches from them.

    The patch pixel at ``(i, j)`` is the scene pixel ``(r, c) + R T (i - ti, j - tj)``: the
    anchor pixel ``(r, c)`` sits at ``(ti, tj)`` of the patch, ``T`` is one of the 8 square
    symmetries or the identity, and ``R`` a rotation by ``angle`` (augmentation) or the identity.
    Rotated patches read the data bilinearly and the labels at the nearest pixel; the anchor
    pixel is always read exactly.
    """

    def __init__(self, data: torch.Tensor, patch_size: int, labels: torch.Tensor | None = None) -> None:
        self.size = patch_size
        self.pad = math.ceil((patch_size - 1) * math.sqrt(2)) + 1  # room for a patch rotated by any angle
        mode = "reflect" if min(data.shape[-2:]) > self.pad else "replicate"
        self.data = F.pad(data[None], (self.pad,) * 4, mode=mode)[0]
        self.labels = F.pad(labels, (self.pad,) * 4, value=0) if labels is not None else None
        offsets = torch.arange(patch_size, device=data.device)
        self.grid_i, self.grid_j = torch.meshgrid(offsets, offsets, indexing="ij")

    def indices(self, rows: torch.Tensor, cols: torch.Tensor, target_i: torch.Tensor, target_j: torch.Tensor,
                symmetry: torch.Tensor | None = None, angle: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded-tensor coordinates ``[B, P, P]`` of each patch pixel: integers, or floats when rotated by ``angle`` (radians)."""
        di = self.grid_i[None] - target_i[:, None, None]
        dj = self.grid_j[None] - target_j[:, None, None]
        if symmetry is not None:
            t = DIHEDRAL.to(rows.device)[symmetry]
            di, dj = (t[:, 0, 0, None, None] * di + t[:, 0, 1, None, None] * dj,
                      t[:, 1, 0, None, None] * di + t[:, 1, 1, None, None] * dj)
        if angle is not None:
            cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
            di, dj = cos * di - sin * dj, sin * di + cos * dj
        return rows[:, None, None] + di + self.pad, cols[:, None, None] + dj + self.pad

    def read(self, src_i: torch.Tensor, src_j: torch.Tensor) -> torch.Tensor:
        """Data ``[B, C, P, P]`` at integer coordinates, or bilinearly between pixels at float ones."""
        if not src_i.is_floating_point():
            return self.data[:, src_i, src_j].permute(1, 0, 2, 3)
        i0 = src_i.floor().clamp(0, self.data.shape[1] - 2)
        j0 = src_j.floor().clamp(0, self.data.shape[2] - 2)
        fi, fj = (src_i - i0).clamp(0, 1).to(self.data.dtype), (src_j - j0).clamp(0, 1).to(self.data.dtype)
        i0, j0 = i0.long(), j0.long()
        top = self.data[:, i0, j0] * (1 - fj) + self.data[:, i0, j0 + 1] * fj
        bottom = self.data[:, i0 + 1, j0] * (1 - fj) + self.data[:, i0 + 1, j0 + 1] * fj
        return (top * (1 - fi) + bottom * fi).permute(1, 0, 2, 3)

    def gather(self, rows: torch.Tensor, cols: torch.Tensor, target_i: torch.Tensor, target_j: torch.Tensor,
               symmetry: torch.Tensor | None = None, angle: torch.Tensor | None = None) -> torch.Tensor:
        """Patches ``[B, C, P, P]`` for pixels ``rows``/``cols`` placed at ``target_i``/``target_j``."""
        return self.read(*self.indices(rows, cols, target_i, target_j, symmetry, angle))

    def gather_with_labels(self, rows: torch.Tensor, cols: torch.Tensor, target_i: torch.Tensor, target_j: torch.Tensor,
                           symmetry: torch.Tensor | None = None, angle: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches ``[B, C, P, P]`` and the label map under them ``[B, P, P]`` (0 = unlabelled; nearest pixel when rotated)."""
        if self.labels is None:
            raise ValueError("this sampler holds no label map")
        src_i, src_j = self.indices(rows, cols, target_i, target_j, symmetry, angle)
        if src_i.is_floating_point():
            nearest_i, nearest_j = src_i.round().long(), src_j.round().long()
        else:
            nearest_i, nearest_j = src_i, src_j
        return self.read(src_i, src_j), self.labels[nearest_i, nearest_j]

    def centred(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Patches with each pixel at the patch centre and no augmentation."""
        centre = torch.full_like(rows, self.size // 2)
        return self.gather(rows, cols, centre, centre)
