"""Finished blocks of a map: kept so that a stopped map continues where it stopped, and shared among torchrun ranks.

Each finished block's encoded outputs go to their own safetensors file in a folder beside the
class map (``.NAME.blocks/``), written under a temporary name and renamed, so that a block file is
the record that the block is done: a restarted job (``torchrun --max-restarts``, or the same
command run again) skips it. ``job.json`` in the folder describes the job (model, inputs, grid,
options); blocks of another job are discarded instead of reused. The folder is removed once the
outputs are assembled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from pathlib import Path

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


class BlockParts:
    """The finished-block folder of the map ``output`` for the job described by ``job`` (JSON-able)."""

    def __init__(self, output: Path, job: dict) -> None:
        self.folder = Path(output).with_name(f".{Path(output).name}.blocks")
        self.job = job

    def path(self, index: int) -> Path:
        return self.folder / f"block-{index:07d}.safetensors"

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
