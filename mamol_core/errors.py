"""User-facing errors: one line that names the offending file and the fix; Ctrl-C and SIGTERM."""

import contextlib
import signal
import threading
from typing import Iterator

#: The signals that mean Ctrl-C: SIGINT, and on Windows SIGBREAK (what a stop button sends a process group there).
CTRL_C_SIGNALS = (signal.SIGINT, *((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()))


class MamolError(Exception):
    """An input problem the user can fix; the CLI prints its message as one line and exits 1."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, a batch scheduler, a container stop), raised where Ctrl-C would be so
    the same clean-up runs: half-written outputs are deleted, finished ones kept."""


class PeerStopped(MamolError):
    """This rank stops because another torchrun rank failed; that rank prints the one message, so
    the CLI exits 1 without printing this one."""


def signal_exception(signum: int) -> KeyboardInterrupt:
    """What a signal raises: :class:`Terminated` for SIGTERM, ``KeyboardInterrupt`` for Ctrl-C."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def handling_signals(handler) -> Iterator[None]:
    """``handler`` answers Ctrl-C and SIGTERM while the block runs (main thread only); the handlers
    before are put back after."""
    previous = {s: signal.signal(s, handler) for s in (*CTRL_C_SIGNALS, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before if before is not None else signal.SIG_DFL)


#: The lists of the interruptions deferred by the holds now active (see :func:`deferred_interruptions`).
_HOLDS: list[list[BaseException]] = []


@contextlib.contextmanager
def deferred_interruptions(active: bool) -> Iterator[list[BaseException]]:
    """While ``active`` (and on the main thread), Ctrl-C and SIGTERM do not stop the code at once:
    they are recorded in the yielded list (as the exception each would raise) for the code to act
    on where it can stop cleanly (a training step's end); a second one raises at once. Inside another
    such hold the outer one records them (it acts on them) and the yielded list stays empty."""
    caught: list[BaseException] = []
    if not active or _HOLDS or threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def record(signum, frame) -> None:
        if caught:  # a second signal: the step did not end (a hung rank?), stop now
            raise signal_exception(signum)
        caught.append(signal_exception(signum))

    _HOLDS.append(caught)
    try:
        with handling_signals(record):
            yield caught
    finally:
        _HOLDS.remove(caught)
