"""Which attention kernel to train with: training steps/s and inference tiles/s of MaMOL on MiniLM-L6
with PyTorch's default attention kernel and with the plain (math) kernel, for both encodings, in one
run. Two one-band sensors, the second missing in half the samples; random inputs, untrained weights.
Prints a markdown table (the figures behind ``mamol_core.device.training_attention``).

    python scripts/attention_kernels.py [--backbone minilm-l6] [--steps 15]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.bench.grid import hardware_name  # noqa: E402
from mamol_core.config import ENCODINGS, BackboneSpec, ClassSpec, ExpertSpec, LayoutSpec, ModalitySpec, ModelConfig  # noqa: E402
from mamol_core.model import build_model  # noqa: E402

KERNELS = {"default": contextlib.nullcontext, "math": lambda: sdpa_kernel([SDPBackend.MATH])}


def rates(encoding: str, kernel: str, backbone: str, steps: int, batch: int = 128) -> tuple[float, float]:
    """(training steps/s, inference tiles/s) on the CPU with bf16 autocast."""
    torch.manual_seed(0)
    modalities = [ModalitySpec(name, 1, [0.0], [1.0]) for name in ("first", "second")]
    classes = [ClassSpec(i + 1, f"class {i + 1}", "#000000") for i in range(6)]
    model = build_model(ModelConfig(modalities, classes, BackboneSpec(backbone), ExpertSpec(), LayoutSpec(encoding=encoding)))
    size = model.config.layout.patch_size
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    x, mask = torch.randn(batch, 2, size, size), torch.ones(batch, 2, dtype=torch.bool)
    mask[: batch // 2, 1] = False

    def step() -> None:
        with KERNELS[kernel](), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x, mask).float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    training = steps / (time.perf_counter() - start)
    tiles, complete = torch.randn(4 * batch, 2, size, size), torch.ones(4 * batch, 2, dtype=torch.bool)
    with torch.inference_mode(), KERNELS[kernel](), torch.autocast("cpu", dtype=torch.bfloat16):
        model(tiles, complete)
        start = time.perf_counter()
        for _ in range(5):
            model(tiles, complete)
        inference = 5 * len(tiles) / (time.perf_counter() - start)
    return training, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    print(f"{hardware_name(torch.device('cpu'))}, torch {torch.__version__}, python {platform.python_version()}, "
          f"{args.backbone}, bf16, batch 128 (training, half the samples without the second sensor), 512 complete tiles (inference)\n")
    print("| encoding | attention kernel | training steps/s | inference tiles/s |")
    print("|---|---|---:|---:|")
    for encoding in ENCODINGS:
        for kernel in KERNELS:
            training, inference = rates(encoding, kernel, args.backbone, args.steps)
            print(f"| {encoding} | {kernel} | {training:.2f} | {inference:.0f} |", flush=True)


if __name__ == "__main__":
    main()
