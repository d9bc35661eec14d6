"""Outputs that appear only when complete: write to a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from mamol_core.errors import MamolError


def check_writable(path: Path) -> None:
    """Stop early when ``path``'s folder does not exist or cannot be written."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise MamolError(f"{path}: the folder {folder} does not exist; create it or choose another output path")
    if not os.access(folder, os.W_OK):
        raise MamolError(f"{path}: the folder {folder} is not writable; choose another output path")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error
    (Ctrl-C included) delete it, so a half-written file never carries the final name."""
    path = Path(path)
    check_writable(path)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
