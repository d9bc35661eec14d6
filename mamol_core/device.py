"""Choosing the compute device and the autocast precision."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mamol_core.errors import MamolError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MamolError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MamolError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AMX or AVX512-BF16, where bf16 matrix products beat float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` (auto, bf16 or fp32); None means plain float32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise MamolError(f"--precision {precision}: use auto, bf16 or fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How ``--precision`` spells the autocast dtype ``amp_dtype`` (None: float32)."""
    return "bf16" if amp_dtype == torch.bfloat16 else "fp32"


def training_attention(device: torch.device) -> contextlib.AbstractContextManager:
    """The attention kernel for training steps: on CPUs the plain (math) kernel, whose backward runs
    the tens-of-token sequences of MaMOL tiles about three times faster than the flash kernel's
    (docs/benchmarks.md); on GPUs PyTorch's own choice. Inference keeps the default kernel."""
    return sdpa_kernel([SDPBackend.MATH]) if device.type == "cpu" else contextlib.nullcontext()
