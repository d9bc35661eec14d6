"""Reading a model file's embedded configuration with the standard library only (no torch)."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

from mamol_core.config import MamolConfig
from mamol_core.errors import MamolError

CONFIG_KEY = "mamol_config"
#: The key under which a report's context records :func:`header_digest` of the model it scored.
DIGEST_KEY = "model_header_sha256"

#: A tensor that ``attach_experts`` adds to a backbone block (LoRA bank and router, replacing FFN
#: experts, or prompts); group 1 is the block's index.
EXPERT_TENSOR = re.compile(r"^backbone\.blocks\.(\d+)\.(?:mlp\.(?:adapter|experts|router)|prompts)\.")


def read_header(path: Path, check_size: bool = True) -> dict:
    """The JSON header of a safetensors file (tensor table and ``__metadata__``), read with the
    standard library only; with ``check_size`` a file shorter or longer than it says is refused."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a model file" if path.is_dir() else "no such model file"
        raise MamolError(f"{path}: {what}; pass the file written by mamol-train")
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            text = handle.read(length)
            if len(text) < length and (text.startswith(b"{") or not text):  # a safetensors header cut short: a copy that stopped early
                raise MamolError(f"{path}: truncated ({path.stat().st_size:,} bytes, less than its header alone says, {8 + length:,}); "
                                 "copy the model file again or retrain")
            header = json.loads(text)
    except (struct.error, ValueError, UnicodeDecodeError):
        raise MamolError(f"{path}: not a mamol model (no safetensors header); pass a file written by mamol-train") from None
    if not isinstance(header, dict):
        raise MamolError(f"{path}: not a mamol model (unexpected header); pass a file written by mamol-train")
    if check_size:
        check_complete(path, header, 8 + length)
    return header


def header_digest(path: Path) -> str:
    """SHA-256 of a model file's safetensors header: its tensor table and embedded configuration, which
    holds what was fitted on its training pixels (normalisation, classes, validation record). A report
    records it, so that the report of an earlier model written to the same path is not taken for this one's."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return hashlib.sha256(handle.read(length)).hexdigest()


def read_metadata(path: Path, check_size: bool = True) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (see :func:`read_header`)."""
    metadata = read_header(path, check_size).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise MamolError(f"{path}: not a mamol model (unexpected metadata); pass a file written by mamol-train")
    return metadata


def check_complete(path: Path, header: dict, start: int) -> None:
    """Stop when the tensors the header lists do not exactly fill the rest of the file (a truncated
    copy or an interrupted download)."""
    try:
        end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise MamolError(f"{path}: not a mamol model (damaged tensor table); pass a file written by mamol-train") from None
    size = path.stat().st_size
    if size != start + end:
        raise MamolError(f"{path}: {'truncated' if size < start + end else 'damaged'} ({size:,} bytes where its header "
                         f"describes {start + end:,}); copy the model file again or retrain")


def read_config(path: Path) -> MamolConfig:
    """The configuration embedded in a model file; refuses non-mamol files and other format versions."""
    metadata = read_metadata(path)
    if CONFIG_KEY not in metadata:
        raise MamolError(f"{path}: a safetensors file but not a mamol model (no {CONFIG_KEY}); pass a file written by mamol-train")
    return MamolConfig.from_json(metadata[CONFIG_KEY], source=str(path))


def expert_blocks(path: Path) -> list[int]:
    """Indices of the backbone blocks whose expert or prompt tensors a model file holds."""
    return sorted({int(found.group(1)) for found in map(EXPERT_TENSOR.match, read_header(path)) if found})
