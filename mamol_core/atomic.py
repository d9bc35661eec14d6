"""Outputs that appear only when complete: write to temporary names, then rename."""

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
    if Path(path).is_dir():
        raise MamolError(f"{path}: is a folder; give a file name")


def partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def atomic_paths(paths: list[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``paths``; when the block succeeds, rename each one that was
    written to its final name; on any error (Ctrl-C included) delete them all, so a half-written
    file never carries a final name."""
    paths = [Path(p) for p in paths]
    for path in paths:
        check_writable(path)
    temporaries = [partial_name(p) for p in paths]
    try:
        yield temporaries
        for temporary, path in zip(temporaries, paths):
            if temporary.exists():
                os.replace(temporary, path)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """:func:`atomic_paths` for one file."""
    with atomic_paths([path]) as (temporary,):
        yield temporary
