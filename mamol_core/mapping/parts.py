"""Finished blocks of a map: kept so that a stopped map continues where it stopped, and shared among torchrun ranks.

Each finished block's encoded outputs go to their own safetensors file in a folder beside the
class map (``.NAME.blocks/``), written under a temporary name and renamed, so that a block file is
the record that the block is done: a restarted job (``torchrun --max-restarts``, or the same
command run again) skips it. ``job.json`` in the folder describes the job (model, inputs, grid,
options); blocks of another job are discarded instead of reused. The folder is removed once the
outputs are assembled. While a job runs, its main process holds a lock on ``.NAME.blocks.lock``
beside the folder, so that a second run mapping into the same output stops with one line instead
of sharing (or deleting) the first one's blocks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from mamol_core.atomic import is_write_failure
from mamol_core.errors import MamolError

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
#: Written by rank 0 once the outputs are complete, before the folder is removed.
ASSEMBLED = "assembled"


def file_identity(path: Path) -> dict:
    """What identifies one version of a file: its resolved path, size and modification time."""
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


#: What a lock request that another process holds fails with (flock: EWOULDBLOCK; msvcrt: EACCES or EDEADLOCK).
LOCK_HELD = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


def _try_lock(handle: IO[str]) -> bool:
    """Take the exclusive lock of the open file ``handle`` without waiting; False if another run holds it. A file
    system without locks (some network or FUSE mounts) raises the OSError it gives."""
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in LOCK_HELD:
            return False
        raise
    return True


def _locked(lock_path: Path) -> IO[str] | None:
    """``lock_path`` opened and locked by this process (created if missing), or a one-line error naming the run
    that holds it; ``None`` (with a warning) where the file system cannot lock files."""
    output = lock_path.with_name(lock_path.name.removeprefix(".").removesuffix(".blocks.lock"))
    for _ in range(10):
        try:
            handle = open(lock_path, "a+")
        except OSError as exc:
            raise MamolError(f"{lock_path}: cannot be created ({exc.strerror or exc}); the output folder must be writable") from None
        try:
            held = not _try_lock(handle)
        except OSError as exc:
            handle.close()
            with contextlib.suppress(OSError):  # of no use here
                lock_path.unlink()
            log.warning("%s: cannot be locked here (%s); two runs into %s at once would clash", lock_path, exc.strerror or exc,
                        output.name)
            return None
        if held:
            holder = ""
            with contextlib.suppress(OSError):  # Windows refuses to read the locked byte
                handle.seek(0)
                holder = handle.read().strip()
            handle.close()
            process = f" (process {holder})" if holder.isdigit() else ""
            raise MamolError(f"{output}: another mamol-map{process} is writing this map now; wait until it ends, or choose "
                             "another output") from None
        if os.name == "nt":  # an open file cannot be deleted there: it is the one at lock_path
            return handle
        try:
            current = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
        except OSError:
            current = False
        if current:  # not a file its last holder deleted while this run opened it
            return handle
        handle.close()
    raise MamolError(f"{lock_path}: could not be locked (other runs keep replacing it); try again")


class BlockParts:
    """The finished-block folder of the map ``output`` for the job described by ``job`` (JSON-able)."""

    def __init__(self, output: Path, job: dict) -> None:
        self.folder = Path(output).with_name(f".{Path(output).name}.blocks")
        self.job = job

    def path(self, index: int) -> Path:
        return self.folder / f"block-{index:07d}.safetensors"

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock that keeps two runs from mapping into this output at once (the main process, for the
        whole job); the lock ends with the process however it ends, and its file is removed on release."""
        lock_path = self.folder.with_name(f"{self.folder.name}.lock")
        handle = _locked(lock_path)
        if handle is None:
            yield
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            if os.name == "nt":  # an open file cannot be deleted there
                handle.close()
                with contextlib.suppress(OSError):
                    lock_path.unlink()
            else:  # deleted before it is released, so that no run locks a file that is gone
                with contextlib.suppress(OSError):
                    lock_path.unlink()
                handle.close()

    def prepare(self) -> int:
        """Create the folder for this job (rank 0, before any rank writes): blocks left by an earlier
        attempt of the same job are kept, those of another job deleted. Returns how many were kept."""
        job_file = self.folder / JOB_FILE
        try:
            if self.folder.exists():
                same = job_file.exists() and json.loads(job_file.read_text()) == self.job
                if same:
                    return len(list(self.folder.glob("block-*.safetensors")))
                if any(self.folder.glob("block-*.safetensors")):
                    log.warning("%s: holds blocks of another mapping job (other model, inputs or options); starting afresh", self.folder)
                shutil.rmtree(self.folder)
            self.folder.mkdir()
            temporary = job_file.with_name(f".{JOB_FILE}.partial-{os.getpid()}")
            temporary.write_text(json.dumps(self.job, indent=1))
            temporary.replace(job_file)
        except (OSError, ValueError) as exc:
            raise MamolError(f"{self.folder}: cannot prepare the folder of finished blocks ({exc}); the output folder must be "
                             "writable (by every rank, under torchrun)") from None
        return 0

    def kept(self, count: int) -> np.ndarray:
        """Which of the ``count`` blocks an earlier run of this same job finished (bool ``[count]``; none where the
        folder is missing or holds another job's blocks). Reads only: nothing is created or deleted."""
        try:
            same = json.loads((self.folder / JOB_FILE).read_text()) == self.job
        except (OSError, ValueError):
            same = False
        return self.finished(count) if same else np.zeros(count, bool)

    def finished(self, count: int) -> np.ndarray:
        """Which of the ``count`` blocks have a file (bool ``[count]``)."""
        done = np.zeros(count, bool)
        for path in self.folder.glob("block-*.safetensors"):
            try:
                index = int(path.stem.removeprefix("block-"))
            except ValueError:
                continue
            if 0 <= index < count:
                done[index] = True
        return done

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Write block ``index`` atomically (a full disk or an unwritable folder: one line, nothing half-written),
        each array deflated (a class map shrinks tens of times), its shape and type in the file's metadata."""
        final = self.path(index)
        temporary = final.with_name(f".{final.name}.partial-{os.getpid()}")
        packed = {name: np.frombuffer(zlib.compress(np.ascontiguousarray(array).tobytes(), 1), np.uint8) for name, array in arrays.items()}
        layout = {name: json.dumps([array.dtype.str, list(array.shape)]) for name, array in arrays.items()}
        try:
            save_file(packed, str(temporary), metadata=layout)
            temporary.replace(final)
        except Exception as exc:  # OSError, or safetensors' own I/O error
            temporary.unlink(missing_ok=True)
            if not is_write_failure(exc):
                raise
            reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            raise MamolError(f"{final}: cannot be written ({reason}); free space or choose another output folder") from None

    def load(self, index: int) -> dict[str, np.ndarray]:
        try:
            with safe_open(str(self.path(index)), "np") as block:
                layout = {name: json.loads(text) for name, text in (block.metadata() or {}).items()}
                packed = {name: block.get_tensor(name) for name in block.keys()}
            return {name: np.frombuffer(zlib.decompress(data.tobytes()), np.dtype(layout[name][0])).reshape(layout[name][1])
                    for name, data in packed.items()}
        except (OSError, ValueError, KeyError, TypeError, zlib.error, SafetensorError) as exc:
            raise MamolError(f"{self.path(index)}: a finished block cannot be read ({exc}); delete it and run the same command "
                             "again to map that block anew") from None

    def mark_assembled(self) -> None:
        """Tell the other ranks that the outputs are written (before the folder is removed)."""
        (self.folder / ASSEMBLED).touch()

    def assembled(self) -> bool:
        """Whether rank 0 has written the outputs (the folder is gone, or marked)."""
        return not self.folder.exists() or (self.folder / ASSEMBLED).exists()

    def remove(self) -> None:
        """Delete the folder: renamed first, so that one stopped halfway is never taken for finished blocks."""
        def failed(function, path, error) -> None:
            log.warning("%s: could not be removed (%s); delete it by hand", path, error[1])

        doomed = self.folder.with_name(f"{self.folder.name}.removed-{os.getpid()}")
        try:
            self.folder.rename(doomed)
        except FileNotFoundError:
            return
        except OSError:
            doomed = self.folder
        shutil.rmtree(doomed, onerror=failed)
