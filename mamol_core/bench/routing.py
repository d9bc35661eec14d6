"""Expert-activation statistics per block and missing pattern (the paper's Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mamol_core.data.patches import PatchSampler
from mamol_core.data.pixels import PixelSet
from mamol_core.data.protocol import pattern_name
from mamol_core.figures import glyphs_told
from mamol_core.model import MaMOLClassifier


@torch.inference_mode()
def routing_shares(model: MaMOLClassifier, sampler: PatchSampler, pixels: PixelSet, pattern: np.ndarray,
                   batch_size: int = 256) -> dict[int, np.ndarray]:
    """For each routed block: the share of top-k selections each routed expert receives over all
    tokens of patches centred on ``pixels``, with every patch given ``pattern`` (presence ``[M]``),
    computed in the model's own dtype."""
    device = sampler.data.device
    dtype = next(model.parameters()).dtype
    totals: dict[int, torch.Tensor] = {}
    model.routing.record = True
    try:
        for batch in torch.arange(len(pixels)).split(batch_size):
            rows = torch.as_tensor(pixels.rows[batch.numpy()], device=device)
            cols = torch.as_tensor(pixels.cols[batch.numpy()], device=device)
            mask = torch.as_tensor(np.tile(pattern, (len(batch), 1)), device=device)
            model.routing.gates.clear()
            model(sampler.centred(rows, cols).to(dtype), mask)
            for layer, gates in model.routing.gates.items():
                selected = (gates > 0).float().sum(dim=(0, 1))
                totals[layer] = totals.get(layer, 0) + selected.cpu()
    finally:
        model.routing.record = False
        model.routing.gates.clear()
    return {layer: (t / t.sum()).numpy() for layer, t in sorted(totals.items())}


def all_patterns(count: int) -> list[np.ndarray]:
    """Complete first, then every pattern with one modality missing (the figure's columns)."""
    return [np.ones(count, bool)] + [np.arange(count) != i for i in range(count)]


def picture_formats() -> list[str]:
    """The extensions (".png", ".pdf", ...) matplotlib writes pictures in here."""
    from matplotlib.figure import Figure

    return sorted(f".{extension}" for extension in Figure().canvas.get_supported_filetypes())


def plot_routing(shares: dict[str, dict[int, np.ndarray]], path: Path, title: str) -> None:
    """One panel per pattern: stacked bars of expert selection shares per block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(shares)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        layers = [int(layer) for layer in shares[name]]
        matrix = np.stack([shares[name][layer] for layer in shares[name]])
        bottom = np.zeros(len(layers))
        for expert in range(matrix.shape[1]):
            ax.bar(layers, matrix[:, expert], bottom=bottom, label=f"expert {expert + 1}")
            bottom += matrix[:, expert]
        ax.set_xticks(layers)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("block")
    axes[0][0].set_ylabel("share of routing selections")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    with glyphs_told("the routing chart"):
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)


def describe_patterns(names: list[str]) -> list[tuple[str, np.ndarray]]:
    return [(pattern_name(p, names), p) for p in all_patterns(len(names))]
