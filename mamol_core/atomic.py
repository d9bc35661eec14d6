"""Outputs that appear only when complete: write to temporary names, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError

from mamol_core.errors import MamolError, deferred_interruptions

#: Final outputs this process has renamed into place, in order (for an honest message on interruption).
_FINISHED: list[Path] = []


def finished_outputs() -> list[Path]:
    """The outputs completed (renamed to their final names) since :func:`forget_finished` and still
    there (a training state is removed once the model is written), each once."""
    return [path for path in dict.fromkeys(_FINISHED) if path.exists()]


def record_finished(path: Path) -> None:
    """Count ``path`` among the completed outputs (a file extended in whole records, like a results CSV)."""
    _FINISHED.append(Path(path))


def forget_finished() -> None:
    """Start a new command's record of completed outputs."""
    _FINISHED.clear()


def check_writable(path: Path) -> None:
    """Stop early when ``path``'s folder does not exist or cannot be written."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise MamolError(f"{path}: the folder {folder} does not exist; create it or choose another output path")
    if Path(path).is_dir():
        raise MamolError(f"{path}: is a folder; give a file name")
    refused = _refuses_files(folder) if os.access(folder, os.W_OK) else "permission denied"
    if refused:
        raise MamolError(f"{path}: the folder {folder} is not writable ({refused}); choose another output path")


def _refuses_files(folder: Path) -> str:
    """Why a file cannot be created in ``folder`` ("" where it can): permission bits pass for root and in folders
    such as /proc, and a full disk or quota refuses too; found now rather than after hours of work."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".mamol-probe-", dir=folder)
    except OSError as exc:  # a folder such as /proc answers "no such file" for a new one
        return "it takes no new files" if exc.errno == errno.ENOENT else exc.strerror or type(exc).__name__
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return ""


def check_folder(folder: Path) -> None:
    """Stop early when the folder ``folder`` (created if absent) cannot be made or written."""
    folder = Path(folder).resolve()
    if folder.exists() and not folder.is_dir():
        raise MamolError(f"{folder}: is a file, not a folder; move it or choose another folder")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK) or _refuses_files(existing):
        raise MamolError(f"{folder}: cannot be written ({existing} is not a writable folder); choose another folder")


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_distinct(outputs: dict[str, Path], inputs: dict[str, Path]) -> None:
    """Stop when an output is one of the inputs (writing it would destroy that input) or two outputs
    are one file (one would be lost). Keys name each path as the user gave it (``-o``, ``--lidar``)."""
    given = {os.path.realpath(path): label for label, path in inputs.items() if path is not None}
    taken: dict[str, str] = {}
    for label, path in outputs.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in given:
            raise MamolError(f"{path}: is the input {given[key]}; writing {label} there would destroy it, choose another output path")
        if key in taken:
            raise MamolError(f"{path}: given as both {taken[key]} and {label}; give each output its own path")
        taken[key] = label


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says a file could not be written: an ``OSError`` (rasterio's write errors are
    ones) or safetensors' I/O error."""
    return isinstance(exc, OSError) or (isinstance(exc, SafetensorError) and "I/O error" in str(exc))


def partial_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that keeps its suffix (drivers such as GeoPackage go by it)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


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
        try:
            yield temporaries
        except Exception as exc:  # a full disk or a lost mount, as OSError or as a writer library's own error
            if isinstance(exc, MamolError) or not is_write_failure(exc):
                raise
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            folders = ", ".join(dict.fromkeys(str(p.parent) for p in paths))
            raise MamolError(f"{folders}: writing {', '.join(p.name for p in paths)} failed ({reason}); "
                             "free space there or choose another output folder") from None
        with deferred_interruptions(True) as interrupted:  # the outputs are renamed together, or none of them
            for temporary, path in zip(temporaries, paths):
                if temporary.exists():
                    os.chmod(temporary, 0o666 & ~_umask())
                    os.replace(temporary, path)
                    _FINISHED.append(path)
        if interrupted:
            raise interrupted[0]
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def created_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` (and its missing parents) for the block; when the block fails (Ctrl-C included),
    remove the folders it created that are still empty, so a stopped command leaves no trace."""
    folder = Path(folder)
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # the deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):  # not empty, or gone: left as it is
                path.rmdir()
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """:func:`atomic_paths` for one file."""
    with atomic_paths([path]) as (temporary,):
        yield temporary
