"""Patch gathering: the anchor pixel lands where asked, the square's symmetries and rotations by any
angle read the scene along a turned grid, labels come from the nearest pixel."""

import math

import torch

from mamol_core.data.patches import DIHEDRAL, PatchSampler

SIZE = 6


def sampler_on(height: int = 30, width: int = 40) -> tuple[PatchSampler, torch.Tensor]:
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    data = torch.stack([rows, cols, torch.randn(height, width, generator=torch.Generator().manual_seed(0))])
    labels = (torch.arange(height * width) % 7).reshape(height, width).to(torch.uint8)
    return PatchSampler(data, SIZE, labels), data


def test_the_anchor_is_read_exactly_whatever_the_turn():
    sampler, data = sampler_on()
    rows, cols = torch.tensor([10, 15, 20, 12]), torch.tensor([11, 30, 5, 20])
    ti, tj = torch.tensor([0, 2, 5, 3]), torch.tensor([5, 1, 0, 3])
    for symmetry, angle in [(None, None), (torch.tensor([1, 5, 6, 7]), None), (torch.tensor([0, 3, 4, 2]), torch.tensor([0.3, 1.0, 0.7, 1.5]))]:
        patches, labels = sampler.gather_with_labels(rows, cols, ti, tj, symmetry, angle)
        anchor = patches[torch.arange(4), :, ti, tj]
        assert torch.allclose(anchor, data[:, rows, cols].T, atol=1e-5)
        assert torch.equal(labels[torch.arange(4), ti, tj], sampler.labels[rows + sampler.pad, cols + sampler.pad])


def test_a_quarter_turn_by_angle_equals_the_square_symmetry_and_any_angle_follows_a_turned_grid():
    sampler, _ = sampler_on()
    rows, cols, ti, tj = torch.tensor([14]), torch.tensor([20]), torch.tensor([2]), torch.tensor([3])
    quarter = next(i for i, t in enumerate(DIHEDRAL.tolist()) if t == [[0, -1], [1, 0]])
    by_symmetry = sampler.gather(rows, cols, ti, tj, torch.tensor([quarter]))
    by_angle = sampler.gather(rows, cols, ti, tj, None, torch.tensor([math.pi / 2]))
    assert torch.allclose(by_symmetry, by_angle, atol=1e-4)
    angle = 0.4  # rows and cols of the scene are channels 0 and 1: a rotated patch holds rotated coordinates
    patch = sampler.gather(rows, cols, ti, tj, None, torch.tensor([angle]))[0]
    i, j = torch.meshgrid(torch.arange(SIZE) - 2.0, torch.arange(SIZE) - 3.0, indexing="ij")
    assert torch.allclose(patch[0], 14 + math.cos(angle) * i - math.sin(angle) * j, atol=1e-4)
    assert torch.allclose(patch[1], 20 + math.sin(angle) * i + math.cos(angle) * j, atol=1e-4)


def test_rotated_patches_stay_inside_the_padding_at_the_corners():
    sampler, data = sampler_on(12, 12)
    corners = torch.tensor([0, 0, 11, 11]), torch.tensor([0, 11, 0, 11])
    for angle in torch.linspace(0, 2 * math.pi, 17):
        n = len(corners[0])
        patches, labels = sampler.gather_with_labels(*corners, torch.full((n,), 5), torch.zeros(n, dtype=torch.long), None,
                                                     torch.full((n,), float(angle)))
        assert torch.isfinite(patches).all() and patches.shape == (n, 3, SIZE, SIZE) and labels.shape == (n, SIZE, SIZE)
